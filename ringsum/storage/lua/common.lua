-- Prepended to every ringsum script when it is loaded. Key layout 2.
--
-- Calling convention. Every script takes these four ARGV first, then its own, and
-- each script's header lists its KEYS and its other ARGV by position:
--   ARGV[1] slot length in µs (1 in exact mode)
--   ARGV[2] span: the window in slots
--   ARGV[3] now: '' to read the Redis server's clock (TIME); '>F' TIME, or F when
--           later: the caller's window clock, which never steps back (clock.py), so a
--           Redis clock stepped back moves no window back (production); 'N' exactly N
--           epoch µs (the tests pass the app's frozen clock here)
--   ARGV[4] ring threshold: a key holding more slots than this becomes a ring; '0': never
--
-- A metric key K is one string, ringsum:{K}:w (the {K} hash tag puts it, and the
-- idempotency markers kept with it on Cluster, on K's slot). It starts with a header
-- of HEADER bytes, big-endian:
--   [0]  form    1 byte   'L' log, 'R' ring
--   [1]  count   uint32   slots held
--   [5]  cells   uint32   ring: how many cells it has (span + 1 when built); log: 0
--   [9]  total   int64 hi, then [17] uint32 lo: the sum of every slot held is
--                hi * 2^32 + lo, exactly (wider than int64: see evict)
--   [21] head    int64    the newest slot held
--   [29] oldest  int64    log: the oldest slot held; ring: no slot before it is held
--   [37] offset  uint32   log: where the oldest pair starts; ring: 0
-- A slot is a cell of CELL bytes: its subtotal, 8 bytes, the int64 plus 2^63, so that
-- zero bytes are "no slot" and -2^63 is never a subtotal; then its count, a uint32:
-- how many values were recorded in it (0: not known, a slot converted from layout 1,
-- which kept no counts; it stays 0 whatever is added to it).
-- Log (a few slots, and every key in exact mode): (slot int64, cell) pairs from
-- `offset` on, oldest first. New slots are appended; aged-out pairs before `offset`
-- are dropped once they take as much room as the live ones.
-- Ring (a busy key in tick mode): `cells` cells; slot s is cell s mod cells. It holds
-- the slots from `oldest` to `head`, at most span + 1: one window. A busy key costs
-- 12 bytes a slot, whatever it held before; it turns back into a log when it holds a
-- quarter of the threshold or less.
--
-- Arithmetic: Lua numbers are doubles, exact only up to 2^53, so an int64 is read as
-- two exact halves, hi (signed) and lo (uint32), and added with a carry: no sum ever
-- passes through one double. Times and slots stay below 2^53 and are exact as numbers.

local slot_us = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local ring_at = tonumber(ARGV[4])

local HEADER, HEADER_FORMAT = 41, '>c1I4I4i8I4i8i8I4'
local CELL = 12
local PAIR = 8 + CELL
local EMPTY = string.rep('\0', CELL)
local TWO31, TWO32 = 2147483648, 4294967296
local MAX_COUNT = TWO32 - 1 -- values one slot counts at most
local READ = 200 * PAIR -- bytes of a log read at a time, a multiple of PAIR
local MAX_STRING = 536870912 -- Redis's longest string (proto-max-bulk-len): 26 million pairs

-- How far now_us() runs ahead of TIME (a '>F' floor above it): what a TTL, which
-- Redis counts by its own clock, adds to last as long as the window says.
local lead_us = 0

local function now_us()
  local given = ARGV[3]
  if given ~= '' and string.sub(given, 1, 1) ~= '>' then
    return tonumber(given)
  end
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  if given ~= '' then
    local floor = tonumber(string.sub(given, 2))
    if floor > now then
      lead_us, now = floor - now, floor
    end
  end
  return now
end

-- floor(a / b) exactly: math.floor(a / b) rounds up when a / b falls a hair below an integer.
local function floor_div(a, b)
  local remainder = math.fmod(a, b)
  if remainder < 0 then
    remainder = remainder + b
  end
  return (a - remainder) / b
end

-- An integer as Redis wants it: tostring() would write 1.7e+15.
local function integer(n)
  return string.format('%.0f', n)
end

-- -- exact integers as (hi, lo) ------------------------------------------------

local function add(ahi, alo, bhi, blo)
  local lo = alo + blo
  if lo >= TWO32 then
    return ahi + bhi + 1, lo - TWO32
  end
  return ahi + bhi, lo
end

local function subtract(ahi, alo, bhi, blo)
  local lo = alo - blo
  if lo < 0 then
    return ahi - bhi - 1, lo + TWO32
  end
  return ahi - bhi, lo
end

-- Within ±(2^63 - 1): what a subtotal, and a total that a write leaves, may be.
local function in_range(hi, lo)
  return hi < TWO31 and (hi > -TWO31 or (hi == -TWO31 and lo > 0))
end

local function cell(hi, lo, count)
  return struct.pack('>I4I4I4', hi + TWO31, lo, count)
end

local function cell_value(packed)
  local biased, lo = struct.unpack('>I4I4', packed)
  return biased - TWO31, lo
end

local function cell_count(packed)
  return (struct.unpack('>I4', packed, 9))
end

-- A slot's count after adding `added` values to its `held`: not known (0) stays so.
local function merged_count(held, added)
  if held == 0 or added == 0 then
    return 0
  end
  return held + added
end

-- -- a key's string --------------------------------------------------------------

local function header(h)
  return struct.pack(HEADER_FORMAT, h.form, h.count, h.cells, h.hi, h.lo, h.head, h.oldest, h.offset)
end

-- The key's header as a table (with its name), or nil when the key does not exist.
local function load(key)
  local raw = redis.call('GETRANGE', key, 0, HEADER - 1)
  if #raw < HEADER then
    return nil
  end
  local h = { key = key }
  h.form, h.count, h.cells, h.hi, h.lo, h.head, h.oldest, h.offset = struct.unpack(HEADER_FORMAT, raw)
  return h
end

-- Write the header back; with `later`, only mark it for the caller to write (a record
-- writes it once, after its value, and before any refusal: see record.lua).
local function save(h, later)
  if later then
    h.dirty = true
  else
    redis.call('SETRANGE', h.key, 0, header(h))
    h.dirty = false
  end
end

local function position(slot, cells)
  return math.fmod(slot, cells) -- slots are positive: exact
end

-- The byte offset of the cell that holds `slot` (which must be held, or the head's next).
local function cell_at(h, slot)
  if h.form == 'R' then
    return HEADER + CELL * position(slot, h.cells)
  end
  return h.offset + PAIR * (h.count - 1) + 8 -- the head is the last pair
end

-- Every slot held, oldest first: two lists, slots and their cells.
local function decode(h)
  local slots, cells = {}, {}
  if h.form == 'L' then
    local raw = redis.call('GETRANGE', h.key, h.offset, h.offset + PAIR * h.count - 1)
    for i = 1, #raw, PAIR do
      slots[#slots + 1] = struct.unpack('>i8', raw, i)
      cells[#cells + 1] = string.sub(raw, i + 8, i + PAIR - 1)
    end
    return slots, cells
  end
  local body = redis.call('GETRANGE', h.key, HEADER, HEADER + CELL * h.cells - 1)
  local start = CELL * position(h.oldest, h.cells)
  body = string.sub(body, start + 1) .. string.sub(body, 1, start) -- cell 0 is now slot `oldest`
  local at = string.find(body, '[^%z]')
  while at do
    local first = at - (at - 1) % CELL
    slots[#slots + 1] = h.oldest + (first - 1) / CELL
    cells[#cells + 1] = string.sub(body, first, first + CELL - 1)
    at = string.find(body, '[^%z]', first + CELL)
  end
  return slots, cells
end

-- Write the key anew from its slots (oldest first), as a ring when it may be one and
-- `form` says so, else as a log; the total and the TTL stay.
local function rewrite(h, form, slots, cells)
  local cells_count = span + 1
  if form == 'R' and slots[#slots] - slots[1] >= cells_count then
    form = 'L' -- slots wider apart than one window (settings changed): only a log holds them
  end
  local parts = {}
  if form == 'L' then
    for i = 1, #slots do
      parts[i] = struct.pack('>i8', slots[i]) .. cells[i]
    end
    h.cells, h.offset = 0, HEADER
  else
    local placed = {}
    for i = 1, #slots do
      placed[position(slots[i], cells_count)] = cells[i]
    end
    for p = 0, cells_count - 1 do
      parts[p + 1] = placed[p] or EMPTY
    end
    h.cells, h.offset = cells_count, 0
  end
  h.form, h.count, h.oldest, h.head = form, #slots, slots[1], slots[#slots]
  redis.call('SET', h.key, header(h) .. table.concat(parts), 'KEEPTTL')
  h.dirty = false
end

-- Drop a log's aged-out pairs (before `offset`) for good.
local function compact(h)
  local live = redis.call('GETRANGE', h.key, h.offset, h.offset + PAIR * h.count - 1)
  h.offset = HEADER
  redis.call('SET', h.key, header(h) .. live, 'KEEPTTL')
  h.dirty = false
end

-- -- ageing out ------------------------------------------------------------------

-- Drop a log's pairs before oldest_kept. Returns how many were dropped.
local function evict_log(h, oldest_kept, later)
  local dropped, at, stop = 0, h.offset, h.offset + PAIR * h.count
  local size = 16 * PAIR
  while at < stop do
    local raw = redis.call('GETRANGE', h.key, at, math.min(at + size, stop) - 1)
    for i = 1, #raw, PAIR do
      local slot = struct.unpack('>i8', raw, i)
      if slot >= oldest_kept then
        h.oldest, stop = slot, at -- found the oldest pair kept
        break
      end
      h.hi, h.lo = subtract(h.hi, h.lo, cell_value(string.sub(raw, i + 8, i + 15)))
      dropped, at = dropped + 1, at + PAIR
    end
    size = math.min(size * 4, READ)
  end
  h.count, h.offset = h.count - dropped, at
  if h.offset - HEADER >= PAIR * h.count then -- as many dead bytes as live ones
    compact(h)
  else
    save(h, later)
  end
  return dropped
end

-- Empty a ring's cells from `oldest` to oldest_kept - 1. Returns how many slots it held.
local function evict_ring(h, oldest_kept, later)
  local dropped, cells = 0, h.cells
  local from = math.max(h.oldest, oldest_kept - cells)
  local first, last = position(from, cells), position(oldest_kept - 1, cells)
  local runs = first <= last and { { first, last } } or { { first, cells - 1 }, { 0, last } }
  for _, run in ipairs(runs) do
    local start = HEADER + CELL * run[1]
    local raw = redis.call('GETRANGE', h.key, start, HEADER + CELL * run[2] + CELL - 1)
    local at, held = string.find(raw, '[^%z]'), 0
    while at do
      local begin = at - (at - 1) % CELL
      h.hi, h.lo = subtract(h.hi, h.lo, cell_value(string.sub(raw, begin, begin + 7)))
      held = held + 1
      at = string.find(raw, '[^%z]', begin + CELL)
    end
    if held > 0 then
      redis.call('SETRANGE', h.key, start, string.rep('\0', #raw))
      dropped = dropped + held
    end
  end
  h.count, h.oldest = h.count - dropped, oldest_kept
  if h.count <= ring_at / 4 then -- few slots left: a log holds them in less room
    rewrite(h, 'L', decode(h))
  else
    save(h, later)
  end
  return dropped
end

-- Age the key out: drop its slots before oldest_kept, taking their subtotals off the
-- total, and delete it once nothing is left. The total is kept wider than int64: the
-- slots left after an eviction may sum past it (a -5e18 dropped from -5e18 + 5e18 +
-- 5e18), and it must stay exact until they age out too.
-- Returns the header left (nil: the key is gone) and how many slots were dropped.
-- `later`: leave writing the header to the caller (see save).
local function evict(h, oldest_kept, later)
  if h == nil then
    return nil, 0
  end
  if h.head < oldest_kept then
    redis.call('DEL', h.key)
    return nil, h.count
  end
  if h.form == 'R' and h.cells ~= span + 1 then -- the window was changed: resize the ring
    rewrite(h, 'R', decode(h))
  end
  if h.oldest >= oldest_kept then
    return h, 0
  end
  if h.form == 'L' then
    return h, evict_log(h, oldest_kept, later)
  end
  return h, evict_ring(h, oldest_kept, later)
end
