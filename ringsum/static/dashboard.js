// ringsum dashboard: polls the JSON API and draws every live key with its window sum
// and a sparkline. Plain browser JavaScript, no framework, no build step, no network
// beyond this page's own origin.
"use strict";

(() => {
  const page = document.body.dataset;
  const config = {
    step: page.step,
    refreshMs: Number(page.refreshMs) || 5000,
    tokenRequired: page.tokenRequired === "true",
  };
  const MAX_ROWS = 100; // one series request per row and refresh: keep it bounded
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
    updated: $("updated"),
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

  const rows = new Map(); // key -> {li, value, svg, title, line, area}
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
    try {
      const list = await api(`/metric?prefix=${encodeURIComponent(asked)}&limit=${MAX_ROWS + 1}`);
      const metrics = list.metrics.slice(0, MAX_ROWS);
      const step = encodeURIComponent(config.step);
      const series = await Promise.all(
        metrics.map((metric) => api(`/metric/${encodeURIComponent(metric.key)}/series?step=${step}`)),
      );
      if (asked !== prefix) return; // the filter changed meanwhile: `again` redraws
      render(metrics, series, list.metrics.length > MAX_ROWS);
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

  // -- messages ----------------------------------------------------------------

  function showBanner(text) {
    ui.banner.hidden = !text;
    ui.banner.textContent = text || "";
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
    ui.tokenError.textContent = message || "";
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

  function render(metrics, series, truncated) {
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

    ui.empty.hidden = metrics.length > 0;
    if (!metrics.length) showEmpty();
    ui.truncated.hidden = !truncated;
    ui.truncated.textContent = truncated
      ? `Showing the first ${MAX_ROWS} keys in key order: type a prefix above to narrow the list.`
      : "";
  }

  function showEmpty() {
    const curlVisible = !prefix;
    ui.emptyText.textContent = prefix
      ? `No live key starts with “${prefix}”.`
      : "No live keys yet. Record a first value:";
    ui.emptyCurl.parentElement.hidden = !curlVisible;
    const auth = config.tokenRequired ? ' -H "Authorization: Bearer $RINGSUM_API_TOKEN"' : "";
    ui.emptyCurl.textContent = `curl -X POST ${location.origin}/metric/visits${auth} -d '{"value": 3}'`;
  }

  function makeRow(key) {
    const li = document.createElement("li");
    li.className = "metric";
    li.dataset.key = key;
    const name = document.createElement("span");
    name.className = "key";
    name.textContent = key;
    const value = document.createElement("span");
    value.className = "value";
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
    li.append(name, svg, value);
    const row = { li, value, svg, title, line, area };
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
  }

  const round = (n) => Math.round(n * 10) / 10;
  const formatSeconds = (ms) => `${ms / 1000} s`;

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
