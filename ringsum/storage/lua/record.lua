-- Record one value per metric key, all in one atomic step; with an idempotency
-- marker, remember it in the same step, or record nothing when it is held already.
--
-- KEYS[1] .. KEYS[n]  the metric keys' strings (ringsum:{K}:w), each key once; n = ARGV[7]
-- KEYS[n + 1]         the listing index, when ARGV[8] is 'index' (a single Redis: the
--                     keys this call creates join it here, atomically; on Cluster it
--                     sits in another slot, and the caller adds them with a follow-up)
-- KEYS[#KEYS]         the marker's key, when ARGV[6] is not ''
-- ARGV[1] .. ARGV[4]  as every script (common.lua)
-- ARGV[5]             TTL in ms (window + one tick)
-- ARGV[6]             the marker (fingerprint, status and body, packed by the caller), or ''
-- ARGV[7]             n, the number of metric keys
-- ARGV[8]             'index' when KEYS[n + 1] is the listing index, else ''
-- ARGV[8 + i]         the value for KEYS[i] and how many values it sums: 12 bytes, a
--                     big-endian int64 and uint32 (the caller sums a batch's values per
--                     key, exactly, refuses a sum past int64, and counts each event)
--
-- Returns {slots aged out, position i of each key this call created, ...}; or, when
-- the marker's key holds one that has not expired, that marker, having changed
-- nothing; or, raised before any value is written, the error "RINGSUM_RANGE <i>" (key
-- i's subtotal or total would leave int64, or its newest slot would count more than
-- MAX_COUNT values) or "RINGSUM_FULL <i>" (key i holds as many slots as one Redis
-- string can: exact mode only, at about 26 million).

local ttl, packed_marker = ARGV[5], ARGV[6]
local count = tonumber(ARGV[7])
local indexed, marked = ARGV[8] == 'index', packed_marker ~= ''
if #KEYS ~= count + (indexed and 1 or 0) + (marked and 1 or 0) or #ARGV ~= 8 + count then
  return redis.error_reply('RINGSUM_CALL record.lua takes n keys, the index if named, the marker if given')
end
local index = indexed and KEYS[count + 1] or nil
local marker = marked and KEYS[#KEYS] or nil

local now = now_us()
local slot = floor_div(now, slot_us)

if marker then
  -- A marker lives as long as the value it guards may count: the window and one tick.
  local held = redis.call('HMGET', marker, 'expires', 'marker')
  if held[1] and tonumber(held[1]) > now then
    return held[2]
  end
end

-- First every check, then every write: a refusal changes nothing (ageing out aside,
-- which no answer can tell). Ageing out leaves each header to be written once, with
-- the value, or here before a refusal.
local evicted = 0
local booked = slot -- the newest slot a value goes to
local plans = {}
local result = { 0 }
local function refuse(reason, h)
  if h.dirty then
    save(h)
  end
  for _, plan in ipairs(plans) do
    if plan.h and plan.h.dirty then
      save(plan.h)
    end
  end
  return redis.error_reply(reason)
end
for i = 1, count do
  local h, dropped = evict(load(KEYS[i]), slot - span, true)
  evicted = evicted + dropped
  local vhi, vlo, vcount = struct.unpack('>i4I4I4', ARGV[8 + i])
  local plan = { key = KEYS[i], h = h, hi = vhi, lo = vlo, count = vcount }
  if not h then
    result[#result + 1] = i -- nothing held (after ageing out): this call creates the key
  else
    -- Same slot: merge. The clock stepped back: book into the newest slot held, so
    -- slots stay ordered and nothing is lost.
    plan.merge = slot <= h.head
    if not plan.merge and h.form == 'L' and HEADER + PAIR * (h.count + 1) > MAX_STRING then
      return refuse('RINGSUM_FULL ' .. i, h)
    end
    if plan.merge then
      local at = cell_at(h, h.head)
      local held = redis.call('GETRANGE', h.key, at, at + CELL - 1)
      plan.hi, plan.lo = add(vhi, vlo, cell_value(held))
      plan.count = merged_count(cell_count(held), vcount)
    end
    plan.total_hi, plan.total_lo = add(h.hi, h.lo, vhi, vlo)
    if not (in_range(plan.hi, plan.lo) and in_range(plan.total_hi, plan.total_lo)) or plan.count > MAX_COUNT then
      return refuse('RINGSUM_RANGE ' .. i, h)
    end
  end
  plans[i] = plan
  if plan.merge then
    booked = math.max(booked, h.head)
  end
end

-- What this call's values count for ends one window after the newest slot they went
-- to (a key's newest slot, should it be ahead of now); Redis counts TTLs by its own
-- clock, which the window may run ahead of (lead_us). The marker lives as long.
local ahead_us = (booked - slot) * slot_us
ttl = integer(tonumber(ttl) + math.ceil((ahead_us + lead_us) / 1000))

for i = 1, count do
  local plan = plans[i]
  local h, value = plan.h, cell(plan.hi, plan.lo, plan.count)
  if not h then
    h = { form = 'L', count = 1, cells = 0, hi = plan.hi, lo = plan.lo, head = slot, oldest = slot, offset = HEADER }
    redis.call('SET', plan.key, header(h) .. struct.pack('>i8', slot) .. value, 'PX', ttl)
  else
    h.hi, h.lo = plan.total_hi, plan.total_lo
    if plan.merge then
      redis.call('SETRANGE', h.key, cell_at(h, h.head), value)
      save(h)
    elseif h.form == 'R' then
      redis.call('SETRANGE', h.key, HEADER + CELL * position(slot, h.cells), value)
      h.count, h.head = h.count + 1, slot
      save(h)
    elseif ring_at > 0 and h.count >= ring_at then -- one more slot than a log holds: a ring
      local slots, cells = decode(h)
      slots[#slots + 1], cells[#cells + 1] = slot, value
      rewrite(h, 'R', slots, cells)
    else
      if h.offset + PAIR * (h.count + 1) > MAX_STRING then
        compact(h)
      end
      redis.call('SETRANGE', h.key, h.offset + PAIR * h.count, struct.pack('>i8', slot) .. value)
      h.count, h.head = h.count + 1, slot
      save(h)
    end
    redis.call('PEXPIRE', h.key, ttl)
  end
end

if index then
  local prefix, suffix = #'ringsum:{', #'}:w' -- the metric key is the string's name between them
  for i = 2, #result do
    redis.call('ZADD', index, 0, string.sub(KEYS[result[i]], prefix + 1, -suffix - 1))
  end
end
if marker then
  redis.call('HSET', marker, 'expires', integer(now + ahead_us + (span + 1) * slot_us), 'marker', packed_marker)
  redis.call('PEXPIRE', marker, ttl)
end
result[1] = evicted
return result
