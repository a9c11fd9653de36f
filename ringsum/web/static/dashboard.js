// ringsum dashboard: polls the JSON API and draws every live key with its window sum
// and a sparkline, pages through the keys, and opens a larger chart of one key's window.
// Plain browser JavaScript and SVG, no framework, no build step, no network beyond this
// page's own origin.
"use strict";

(() => {
  const page = document.body.dataset;
  const config = {
    step: page.step,
    chartStep: page.chartStep,
    window: page.window,
    refreshMs: Number(page.refreshMs) || 5000,
    tokenRequired: page.tokenRequired === "true",
  };
  const MAX_ROWS = 100; // one series request per row and refresh: a page holds this many
  const FETCH_TIMEOUT_MS = Math.min(Math.max(config.refreshMs * 2, 5000), 20000);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SPARK_W = 300;
  const SPARK_H = 40;
  const SPARK_PAD = 3;

  const $ = (id) => document.getElementById(id);
  const ui = {
    banner: $("banner"),
    tokenForm: $("token-form"),
    tokenInput: $("token-input"),
    tokenError: $("token-error"),
    controls: $("controls"),
    filter: $("filter"),
    loading: $("loading"),
    empty: $("empty"),
    emptyText: $("empty-text"),
    emptyCurl: $("empty-curl"),
    metrics: $("metrics"),
    truncated: $("truncated"),
    pager: $("pager"),
    firstPage: $("first-page"),
    previousPage: $("previous-page"),
    nextPage: $("next-page"),
    pageNumber: $("page-number"),
    updated: $("updated"),
    chart: $("chart"),
    chartTitle: $("chart-title"),
    chartSum: $("chart-sum"),
    chartReadout: $("chart-readout"),
    chartSvg: $("chart-svg"),
    chartClose: $("chart-close"),
    chartError: $("chart-error"),
  };

  // The token lives in sessionStorage: it survives reloads of this tab and nothing
  // else. Some browsers refuse storage (private modes): then it lives in memory.
  const tokenStore = (() => {
    const KEY = "ringsum.token";
    let fallback = null;
    return {
      get() {
        try {
          return sessionStorage.getItem(KEY);
        } catch {
          return fallback;
        }
      },
      set(token) {
        fallback = token;
        try {
          sessionStorage.setItem(KEY, token);
        } catch {
          /* memory only */
        }
      },
      clear() {
        fallback = null;
        try {
          sessionStorage.removeItem(KEY);
        } catch {
          /* memory only */
        }
      },
    };
  })();

  class ApiError extends Error {
    // kind: "network" (no answer), "auth" (401), "server" (5xx), "client" (other 4xx)
    constructor(kind, status, detail) {
      super(detail || kind);
      this.kind = kind;
      this.status = status;
      this.detail = detail;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const token = tokenStore.get();
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, { headers, cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    } catch (error) {
      const timedOut = error && error.name === "TimeoutError";
      throw new ApiError("network", 0, timedOut ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : "");
    }
    if (response.ok) {
      try {
        return JSON.parse(await response.text(), exactIntegers);
      } catch {
        throw new ApiError("server", response.status, "the answer was not JSON");
      }
    }
    let detail = "";
    try {
      detail = (await response.json()).detail || "";
    } catch {
      /* not a problem document: the status says enough */
    }
    const kind = response.status === 401 ? "auth" : response.status >= 500 ? "server" : "client";
    throw new ApiError(kind, response.status, detail);
  }

  // Sums are exact integers and may pass 2**53, where a JavaScript number would round
  // them: read those from the JSON source text as BigInt, where the browser shows it.
  function exactIntegers(key, value, context) {
    if (typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)) {
      return BigInt(context.source);
    }
    return value;
  }

  // -- state -------------------------------------------------------------------

  const rows = new Map(); // key -> {li, button, value, svg, title, line, area}
  // Paging: pages[i] is where page i starts (the `after` cursor the API gave, null for
  // the first page) and how many keys the pages before it showed, for "keys 101-200".
  let pages = [{ after: null, offset: 0 }];
  let pageIndex = 0;
  let nextCursor = null;
  let scrollToList = false;
  let prefix = new URLSearchParams(location.search).get("prefix") || "";
  let inFlight = false;
  let again = false;
  let waitingForToken = false;
  let lastSuccess = null;

  ui.filter.value = prefix;

  function requestRefresh() {
    if (inFlight) {
      again = true;
      return;
    }
    refresh();
  }

  async function refresh() {
    if (waitingForToken) return;
    inFlight = true;
    again = false;
    const asked = prefix;
    const askedPage = pages[pageIndex];
    if (ui.chart.open) loadChart();
    try {
      const list = await listPage(asked, askedPage.after);
      const step = encodeURIComponent(config.step);
      const series = await Promise.all(
        list.metrics.map((metric) => api(`/metric/${encodeURIComponent(metric.key)}/series?step=${step}`)),
      );
      if (asked !== prefix || askedPage !== pages[pageIndex]) return; // changed meanwhile: `again` redraws
      render(list, series);
      lastSuccess = new Date();
      showBanner(null);
      ui.updated.textContent = `Updated ${lastSuccess.toLocaleTimeString()}.`;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showError(error);
    } finally {
      inFlight = false;
      ui.loading.hidden = true;
      if (again) requestRefresh();
    }
  }

  // One page of keys: {metrics, next, more}. `next` is the API's cursor for the page
  // after this one; an API without paging never sends it, and then `more` says whether
  // it stopped at the limit with keys left over (the page then says how to narrow).
  async function listPage(asked, after) {
    const query = `/metric?prefix=${encodeURIComponent(asked)}${after === null ? "" : `&after=${encodeURIComponent(after)}`}`;
    const list = await api(`${query}&limit=${MAX_ROWS}`);
    const next = list.next === undefined || list.next === null ? null : String(list.next);
    if (next !== null || list.metrics.length < MAX_ROWS) {
      return { metrics: list.metrics.slice(0, MAX_ROWS), next, more: next !== null };
    }
    // A full page and no cursor: the last page, or an API without paging that stopped
    // at the limit. One key more settles which.
    const probe = await api(`${query}&limit=${MAX_ROWS + 1}`);
    return { metrics: probe.metrics.slice(0, MAX_ROWS), next: null, more: probe.metrics.length > MAX_ROWS };
  }

  function goToPage(index) {
    if (index === pageIndex || index < 0) return;
    if (index > pageIndex) {
      if (nextCursor === null) return;
      pages = pages.slice(0, pageIndex + 1);
      pages.push({ after: nextCursor, offset: pages[pageIndex].offset + rows.size });
    }
    pageIndex = index;
    nextCursor = null;
    scrollToList = true;
    setPagerBusy();
    requestRefresh();
  }

  function resetPaging() {
    pages = [{ after: null, offset: 0 }];
    pageIndex = 0;
    nextCursor = null;
  }

  function setPagerBusy() {
    for (const button of [ui.firstPage, ui.previousPage, ui.nextPage]) button.disabled = true;
  }

  ui.firstPage.addEventListener("click", () => goToPage(0));
  ui.previousPage.addEventListener("click", () => goToPage(pageIndex - 1));
  ui.nextPage.addEventListener("click", () => goToPage(pageIndex + 1));

  // -- messages ----------------------------------------------------------------

  function showBanner(text) {
    ui.banner.hidden = !text;
    setText(ui.banner, text || "");
    ui.metrics.classList.toggle("stale", Boolean(text));
  }

  function showError(error) {
    const retry = `Retrying every ${formatSeconds(config.refreshMs)}`;
    const since = lastSuccess ? `; the figures below are from ${lastSuccess.toLocaleTimeString()}` : "";
    if (error.kind === "auth") {
      const hadToken = tokenStore.get() !== null;
      tokenStore.clear();
      askForToken(
        hadToken
          ? "That token was refused (401 Unauthorized). Check RINGSUM_API_TOKEN and enter it again."
          : "The API asks for a token (401 Unauthorized).",
      );
    } else if (error.kind === "network") {
      const why = error.detail ? ` (${error.detail})` : "";
      showBanner(`Cannot reach the ringsum service at ${location.origin}${why}: is it running? ${retry}${since}.`);
    } else if (error.kind === "server") {
      const why = error.detail ? `: ${error.detail}` : "";
      showBanner(`The ringsum service answered ${error.status}${why}. ${retry}${since}.`);
    } else {
      clearRows(); // asked for something no key can match, such as a prefix with a space
      showBanner(`The API refused the request (${error.status})${error.detail ? `: ${error.detail}` : ""}.`);
    }
  }

  function askForToken(message) {
    waitingForToken = true;
    clearRows();
    showBanner(null);
    ui.empty.hidden = true;
    ui.loading.hidden = true;
    ui.controls.hidden = true;
    ui.tokenError.hidden = !message;
    setText(ui.tokenError, message || "");
    ui.tokenForm.hidden = false;
    ui.tokenInput.value = "";
    ui.tokenInput.focus();
  }

  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.tokenInput.value.trim();
    if (!token) return;
    tokenStore.set(token);
    ui.tokenForm.hidden = true;
    ui.controls.hidden = false;
    ui.tokenInput.value = "";
    waitingForToken = false;
    ui.loading.hidden = false;
    requestRefresh();
  });

  // -- rendering ---------------------------------------------------------------

  function render(list, series) {
    const { metrics } = list;
    const live = new Set(metrics.map((metric) => metric.key));
    for (const [key, row] of rows) {
      if (!live.has(key)) {
        row.li.remove();
        rows.delete(key);
      }
    }
    let next = ui.metrics.firstElementChild;
    metrics.forEach((metric, index) => {
      const row = rows.get(metric.key) || makeRow(metric.key);
      if (row.li === next) next = next.nextElementSibling;
      else ui.metrics.insertBefore(row.li, next);
      row.li.dataset.value = String(metric.value);
      row.value.textContent = metric.value.toLocaleString();
      drawSparkline(row, metric.key, series[index]);
    });

    const firstPage = pageIndex === 0;
    ui.empty.hidden = metrics.length > 0 || !firstPage;
    if (!metrics.length && firstPage) showEmpty();
    nextCursor = list.next;
    showPaging(metrics.length, list.more);
    if (scrollToList) {
      scrollToList = false;
      ui.controls.scrollIntoView({ block: "start" });
    }
  }

  function showPaging(shown, more) {
    const { offset } = pages[pageIndex];
    const range = `${(offset + 1).toLocaleString()}–${(offset + shown).toLocaleString()}`;
    let text = "";
    if (pageIndex > 0 && !shown) text = "No live keys after the previous page any more.";
    else if (pageIndex > 0) text = `Showing keys ${range} in key order${more ? "; the next page has more." : "."}`;
    else if (more && nextCursor !== null) text = `Showing the first ${shown} keys in key order; the next page has more.`;
    else if (more) text = `Showing the first ${shown} keys in key order: type a prefix above to narrow the list.`;
    ui.truncated.hidden = !text;
    setText(ui.truncated, text);

    ui.pager.hidden = pageIndex === 0 && nextCursor === null;
    ui.firstPage.disabled = pageIndex === 0;
    ui.previousPage.disabled = pageIndex === 0;
    ui.nextPage.disabled = nextCursor === null;
    ui.firstPage.hidden = pageIndex < 2; // "Previous page" already is the first page
    setText(ui.pageNumber, `Page ${pageIndex + 1}`);
  }

  function showEmpty() {
    const curlVisible = !prefix;
    setText(
      ui.emptyText,
      prefix ? `No live key starts with “${prefix}”.` : "No live keys yet. Record a first value:",
    );
    ui.emptyCurl.parentElement.hidden = !curlVisible;
    const auth = config.tokenRequired ? ' -H "Authorization: Bearer $RINGSUM_API_TOKEN"' : "";
    setText(ui.emptyCurl, `curl -X POST ${location.origin}/metric/visits${auth} -d '{"value": 3}'`);
  }

  function makeRow(key) {
    const li = document.createElement("li");
    li.className = "metric";
    li.dataset.key = key;
    // The key is a button: Enter or Space on it, or a click anywhere on the row, opens
    // the larger chart of its window.
    const button = document.createElement("button");
    button.type = "button";
    button.className = "key";
    button.textContent = key;
    button.setAttribute("aria-haspopup", "dialog");
    const value = document.createElement("span");
    value.className = "value num";
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const title = document.createElementNS(SVG_NS, "title");
    const area = document.createElementNS(SVG_NS, "path");
    area.setAttribute("class", "spark-area");
    const line = document.createElementNS(SVG_NS, "path");
    line.setAttribute("class", "spark-line");
    svg.append(title, area, line);
    li.append(button, svg, value);
    li.addEventListener("click", () => openChart(key, button));
    const row = { li, button, value, svg, title, line, area };
    rows.set(key, row);
    return row;
  }

  function drawSparkline(row, key, series) {
    const sums = series.points.map((point) => Number(point[1]));
    const { line, area } = sparklinePaths(sums);
    row.line.setAttribute("d", line);
    row.area.setAttribute("d", area);
    const peak = sums.length ? Math.max(...sums) : 0;
    const label = `${key}: ${sums.length} steps of ${config.step}, peak ${peak} per step`;
    row.svg.setAttribute("aria-label", label);
    row.title.textContent = label;
  }

  // Scales the sums into the viewBox; zero always sits inside the range so the area
  // fills towards the zero line, and a flat series draws a flat line.
  function sparklinePaths(sums) {
    const values = sums.length ? sums : [0];
    const low = Math.min(0, ...values);
    const high = Math.max(0, ...values);
    const span = high - low || 1;
    const y = (v) => round(SPARK_PAD + ((high - v) / span) * (SPARK_H - 2 * SPARK_PAD));
    const x = (i) => (values.length > 1 ? round((i * SPARK_W) / (values.length - 1)) : 0);
    const coordinates = values.map((v, i) => `${x(i)},${y(v)}`);
    if (values.length === 1) coordinates.push(`${SPARK_W},${y(values[0])}`);
    const line = `M${coordinates.join("L")}`;
    const zero = y(0);
    const area = `${line}L${SPARK_W},${zero}L0,${zero}Z`;
    return { line, area };
  }

  function clearRows() {
    for (const row of rows.values()) row.li.remove();
    rows.clear();
    ui.truncated.hidden = true;
    ui.pager.hidden = true;
  }

  const round = (n) => Math.round(n * 10) / 10;
  const formatSeconds = (ms) => `${ms / 1000} s`;

  // Text whose numbers must never break mid-digits: each run of digits (with its
  // separators, as in 9,007,199,254,740,991 or 127.0.0.1:5000) goes into a
  // no-wrap span, and the words around it wrap as usual.
  const NUMBER = /\d(?:[\d.,:]*\d)?/g;
  function setText(element, text) {
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(NUMBER)) {
      if (match.index > last) parts.push(text.slice(last, match.index));
      const number = document.createElement("span");
      number.className = "num";
      number.textContent = match[0];
      parts.push(number);
      last = match.index + match[0].length;
    }
    if (last < text.length) parts.push(text.slice(last));
    element.replaceChildren(...parts);
  }

  // -- the larger chart of one key ---------------------------------------------

  const CHART_PAD = { top: 10, right: 10, bottom: 26, left: 8 };
  const AXIS_FONT_PX = 12;
  // Time-axis label spacing, in seconds: the first that leaves room between labels wins.
  const TIME_TICKS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const chart = { key: null, opener: null, series: null, selectedStart: null, request: 0 };

  function openChart(key, opener) {
    if (ui.chart.open && chart.key === key) return;
    chart.key = key;
    chart.opener = opener;
    chart.series = null;
    chart.selectedStart = null;
    ui.chartTitle.textContent = key;
    ui.chartSum.textContent = "…";
    ui.chartReadout.textContent = "Loading…";
    ui.chartError.hidden = true;
    ui.chartSvg.replaceChildren();
    ui.chartSvg.setAttribute("aria-label", `${key}: sum per ${config.chartStep} step over the last ${config.window}`);
    if (!ui.chart.open) ui.chart.showModal();
    ui.chartSvg.focus();
    loadChart();
  }

  async function loadChart() {
    const request = ++chart.request;
    const key = chart.key;
    if (key === null) return;
    let series;
    try {
      // with=count: each point is [start, sum, count], for the readout.
      series = await api(
        `/metric/${encodeURIComponent(key)}/series?step=${encodeURIComponent(config.chartStep)}&with=count`,
      );
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (request !== chart.request) return;
      ui.chartError.hidden = false;
      setText(ui.chartError, `Could not load the chart (${error.status || "no answer"})${error.detail ? `: ${error.detail}` : ""}.`);
      return;
    }
    if (request !== chart.request || !ui.chart.open) return;
    ui.chartError.hidden = true;
    chart.series = series;
    const total = series.points.reduce((sum, point) => sum + BigInt(point[1]), 0n);
    ui.chartSum.textContent = total.toLocaleString();
    ui.chartSum.dataset.value = String(total);
    drawChart();
  }

  function closeChart() {
    if (ui.chart.open) ui.chart.close();
  }

  ui.chartClose.addEventListener("click", closeChart);
  // A click on the backdrop (the dialog element itself, outside its body) closes too;
  // Escape closes it natively.
  ui.chart.addEventListener("click", (event) => {
    if (event.target === ui.chart) closeChart();
  });
  ui.chart.addEventListener("close", () => {
    // The event comes a moment after the dialog closed: by then Enter on the focused
    // key may have opened it again, and this close is old news.
    if (ui.chart.open) return;
    chart.key = null;
    chart.series = null;
    chart.request++;
    const back = chart.opener && chart.opener.isConnected ? chart.opener : ui.filter;
    back.focus();
  });

  // The chart is drawn in CSS pixels (viewBox = the box's size), so text and bars keep
  // their shape at any width; a resize draws it again.
  function drawChart() {
    const svg = ui.chartSvg;
    const { points } = chart.series;
    const step = Number(chart.series.step);
    const width = Math.max(200, Math.round(svg.clientWidth));
    const height = Math.max(120, Math.round(svg.clientHeight));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    if (!points.length) {
      svg.replaceChildren(svgText("No values in the window.", width / 2, height / 2, "middle", "chart-empty"));
      ui.chartReadout.textContent = "";
      return;
    }
    const sums = points.map((point) => Number(point[1]));
    const scale = valueScale(Math.min(0, ...sums), Math.max(0, ...sums));
    const yLabels = scale.ticks.map((tick) => compact.format(tick));
    const left = CHART_PAD.left + Math.max(...yLabels.map((label) => label.length)) * AXIS_FONT_PX * 0.62 + 6;
    const plot = { left, right: width - CHART_PAD.right, top: CHART_PAD.top, bottom: height - CHART_PAD.bottom };
    const start = Number(points[0][0]);
    const end = Number(points[points.length - 1][0]) + step;
    const x = (t) => plot.left + ((t - start) / (end - start)) * (plot.right - plot.left);
    const y = (v) => plot.bottom - ((v - scale.low) / (scale.high - scale.low)) * (plot.bottom - plot.top);

    const parts = [];
    scale.ticks.forEach((tick, index) => {
      parts.push(svgLine(plot.left, y(tick), plot.right, y(tick), tick === 0 ? "chart-zero" : "chart-grid"));
      parts.push(svgText(yLabels[index], plot.left - 6, y(tick) + AXIS_FONT_PX * 0.35, "end", "chart-label"));
    });
    for (const tick of timeTicks(start, end, plot.right - plot.left)) {
      const tx = x(tick.t);
      parts.push(svgLine(tx, plot.bottom, tx, plot.bottom + 4, "chart-grid"));
      const anchor = tx - plot.left < 30 ? "start" : plot.right - tx < 30 ? "end" : "middle";
      parts.push(svgText(tick.label, tx, height - 8, anchor, "chart-label"));
    }
    const barWidth = x(start + step) - x(start);
    const gap = barWidth > 4 ? 1 : 0;
    const bars = points.map((point, index) => {
      const top = y(Math.max(0, sums[index]));
      const bar = svgElement("rect", {
        class: "chart-bar",
        x: round(x(Number(point[0])) + gap / 2),
        y: round(top),
        width: round(Math.max(0.5, barWidth - gap)),
        height: round(Math.max(sums[index] ? 1 : 0, Math.abs(y(sums[index]) - y(0)))),
      });
      bar.dataset.index = String(index);
      return bar;
    });
    const cursor = svgElement("rect", { class: "chart-cursor", y: plot.top, height: plot.bottom - plot.top });
    parts.push(cursor, ...bars);
    svg.replaceChildren(...parts);
    chart.plot = { left: plot.left, right: plot.right, start, end, step, bars, cursor, barWidth };

    let selected = points.findIndex((point) => Number(point[0]) === chart.selectedStart);
    if (selected < 0) selected = points.length - 1; // the step that is filling now
    select(selected);
  }

  function select(index) {
    const { points } = chart.series;
    const { bars, cursor, step, barWidth } = chart.plot;
    const clamped = Math.max(0, Math.min(points.length - 1, index));
    const point = points[clamped];
    chart.selectedStart = Number(point[0]);
    for (const bar of bars) bar.classList.toggle("selected", bar.dataset.index === String(clamped));
    cursor.setAttribute("x", bars[clamped].getAttribute("x"));
    cursor.setAttribute("width", round(Math.max(barWidth, 1)));
    const from = new Date(chart.selectedStart * 1000);
    const to = new Date((chart.selectedStart + step) * 1000);
    const range = document.createElement("span");
    range.className = "num";
    range.textContent = `${formatTime(from, step)}–${formatTime(to, step)}`;
    const sum = document.createElement("strong");
    sum.className = "num";
    sum.textContent = point[1].toLocaleString();
    const counted = document.createElement("span");
    counted.className = "chart-count num";
    counted.textContent = countText(point[2]);
    ui.chartReadout.replaceChildren(range, ": ", sum, " ", counted);
    ui.chartReadout.dataset.index = String(clamped);
    ui.chartReadout.dataset.count = String(point[2]);
  }

  // A step's count of values as the readout says it; null: recorded by a ringsum that
  // kept no counts (0.2), so none is shown.
  function countText(count) {
    if (count === null || count === undefined) return "(count not known)";
    if (count === 0) return "(no values)";
    return count === 1 ? "(1 value)" : `(${count.toLocaleString()} values)`;
  }

  function indexAt(clientX) {
    const box = ui.chartSvg.getBoundingClientRect();
    const { left, right, start, end, step } = chart.plot;
    const px = ((clientX - box.left) * Number(ui.chartSvg.viewBox.baseVal.width)) / box.width;
    const t = start + ((px - left) / (right - left)) * (end - start);
    return Math.floor((t - start) / step);
  }

  ui.chartSvg.addEventListener("pointermove", (event) => {
    if (chart.series && chart.series.points.length) select(indexAt(event.clientX));
  });
  ui.chartSvg.addEventListener("pointerdown", (event) => {
    if (chart.series && chart.series.points.length) select(indexAt(event.clientX));
  });
  ui.chartSvg.addEventListener("keydown", (event) => {
    if (!chart.series || !chart.series.points.length) return;
    const current = Number(ui.chartReadout.dataset.index);
    const moves = { ArrowLeft: current - 1, ArrowRight: current + 1, Home: 0, End: chart.series.points.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    select(moves[event.key]);
  });
  new ResizeObserver(() => {
    if (ui.chart.open && chart.series) drawChart();
  }).observe(ui.chartSvg);

  // 0 and the extremes inside round ticks (1, 2 or 5 times a power of ten), about four.
  function valueScale(low, high) {
    if (low === high) high = low + 1;
    const rough = (high - low) / 4;
    const power = 10 ** Math.floor(Math.log10(rough));
    const unit = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
    const from = Math.floor(low / unit) * unit;
    const to = Math.ceil(high / unit) * unit;
    const ticks = [];
    for (let tick = from; tick <= to + unit / 2; tick += unit) ticks.push(Math.round(tick / unit) * unit);
    return { low: from, high: to, ticks };
  }

  // Labels at round local times (every 10 minutes, say), as many as fit the width.
  function timeTicks(start, end, widthPx) {
    const sample = formatTime(new Date(start * 1000), end - start < 600 ? 1 : 60);
    const room = sample.length * AXIS_FONT_PX * 0.62 + 24;
    const fits = Math.max(2, Math.floor(widthPx / room));
    const every = TIME_TICKS.find((seconds) => (end - start) / seconds <= fits) || TIME_TICKS.at(-1);
    const offset = -new Date(start * 1000).getTimezoneOffset() * 60; // local midnight is round
    const ticks = [];
    for (let t = Math.ceil((start + offset) / every) * every - offset; t <= end; t += every) {
      ticks.push({ t, label: formatTime(new Date(t * 1000), every) });
    }
    return ticks;
  }

  // Local time, to the second only when steps or labels are shorter than a minute, with
  // the day when a label falls on a round day.
  function formatTime(date, seconds) {
    const options = { hour: "numeric", minute: "2-digit" };
    if (seconds < 60) options.second = "2-digit";
    if (seconds >= 86400) return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    return date.toLocaleTimeString(undefined, options);
  }

  function svgElement(name, attributes) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [attribute, value] of Object.entries(attributes)) element.setAttribute(attribute, String(value));
    return element;
  }

  const svgLine = (x1, y1, x2, y2, className) =>
    svgElement("line", { x1: round(x1), y1: round(y1), x2: round(x2), y2: round(y2), class: className });

  function svgText(text, x, y, anchor, className) {
    const element = svgElement("text", { x: round(x), y: round(y), "text-anchor": anchor, class: className });
    element.textContent = text;
    return element;
  }

  // -- filter and timers -------------------------------------------------------

  let filterTimer = null;
  ui.filter.addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      prefix = ui.filter.value.trim();
      const search = new URLSearchParams(location.search);
      if (prefix) search.set("prefix", prefix);
      else search.delete("prefix");
      const query = search.toString();
      history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}`);
      resetPaging();
      requestRefresh();
    }, 150);
  });

  setInterval(() => {
    if (!document.hidden && !inFlight) refresh();
  }, config.refreshMs);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) requestRefresh();
  });

  if (config.tokenRequired && tokenStore.get() === null) askForToken(null);
  else refresh();
})();
