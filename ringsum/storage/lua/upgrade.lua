-- Key layout 1 to 2, a few metric keys at a time (python -m ringsum.storage.upgrade):
-- a key's layout-1 hash and sorted set become its layout-2 string, atomically. A
-- string the key has already (written after an earlier upgrade) is merged with them.
--
-- KEYS[i]             metric key i's string of layout 2 (ringsum:{K}:w), i = 1 .. n
-- KEYS[n + i]         its layout-1 hash: field "total", and one field per slot held
--                     with that slot's subtotal, a decimal string (ringsum:{K}:h)
-- KEYS[2n + i]        its layout-1 sorted set of the slots held, scored by slot (ringsum:{K}:z)
-- ARGV[1] .. ARGV[4]  as every script (common.lua)
-- ARGV[5]             n, the number of metric keys
-- ARGV[6]             TTL in ms (window + one tick), for a layout-1 key that had none
--
-- Returns the positions i of the keys that hold something now (the caller makes sure
-- the listing index names them). Layout-1 structures are deleted in every case.

local count = tonumber(ARGV[5])
if #KEYS ~= 3 * count or #ARGV ~= 6 then
  return redis.error_reply('RINGSUM_CALL upgrade.lua takes n strings, n hashes and n sorted sets')
end
local oldest_kept = floor_div(now_us(), slot_us) - span
local CHUNK = 1000 -- unpack() puts every element on Lua's stack, which is limited

-- A decimal integer string as (hi, lo), exactly.
local function parsed(decimal)
  local negative = string.sub(decimal, 1, 1) == '-'
  local hi, lo = 0, 0
  for i = negative and 2 or 1, #decimal do
    lo = lo * 10 + string.byte(decimal, i) - 48
    local carry = math.floor(lo / TWO32)
    hi, lo = hi * 10 + carry, lo - carry * TWO32
  end
  if negative then
    return subtract(0, 0, hi, lo)
  end
  return hi, lo
end

-- The slots of layout 1 still in the window, oldest first, with their cells.
local function layout_1(hash, zset)
  local members = redis.call('ZRANGEBYSCORE', zset, integer(oldest_kept), '+inf')
  local slots, cells = {}, {}
  for first = 1, #members, CHUNK do
    local chunk = { unpack(members, first, math.min(first + CHUNK - 1, #members)) }
    local subtotals = redis.call('HMGET', hash, unpack(chunk))
    for i = 1, #chunk do
      local hi, lo = parsed(subtotals[i] or '0')
      if not in_range(hi, lo) then
        return redis.error_reply('RINGSUM_RANGE ' .. hash .. ' holds a subtotal past int64')
      end
      slots[#slots + 1], cells[#cells + 1] = tonumber(chunk[i]), cell(hi, lo, 0) -- layout 1 kept no counts
    end
  end
  return slots, cells
end

-- Two lists of slots (oldest first) as one; a slot in both adds its cells (its count
-- is not known when either's is not).
local function merged(slots_a, cells_a, slots_b, cells_b)
  local slots, cells, a, b = {}, {}, 1, 1
  while a <= #slots_a or b <= #slots_b do
    local slot = slots_b[b]
    if b > #slots_b or (a <= #slots_a and slots_a[a] < slot) then
      slot = slots_a[a]
    end
    local hi, lo, count = 0, 0, nil
    if slots_a[a] == slot then
      hi, lo = add(hi, lo, cell_value(cells_a[a]))
      count = cell_count(cells_a[a])
      a = a + 1
    end
    if slots_b[b] == slot then
      hi, lo = add(hi, lo, cell_value(cells_b[b]))
      count = count and merged_count(count, cell_count(cells_b[b])) or cell_count(cells_b[b])
      b = b + 1
    end
    if not in_range(hi, lo) then
      return redis.error_reply('RINGSUM_RANGE a slot of both layouts adds up past int64')
    end
    slots[#slots + 1], cells[#cells + 1] = slot, cell(hi, lo, count)
  end
  return slots, cells
end

local converted = {}
for i = 1, count do
  local key, hash, zset = KEYS[i], KEYS[count + i], KEYS[2 * count + i]
  local slots, cells = layout_1(hash, zset)
  if slots.err then
    return slots
  end
  if #slots > 0 then
    local ttl = redis.call('PTTL', zset)
    local h = evict(load(key), oldest_kept)
    if h then
      slots, cells = merged(slots, cells, decode(h))
      if slots.err then
        return slots
      end
      ttl = math.max(ttl, redis.call('PTTL', key))
    else
      h = { key = key }
    end
    h.hi, h.lo = 0, 0
    for j = 1, #cells do
      h.hi, h.lo = add(h.hi, h.lo, cell_value(cells[j]))
    end
    rewrite(h, (ring_at > 0 and #slots > ring_at) and 'R' or 'L', slots, cells)
    redis.call('PEXPIRE', key, ttl > 0 and integer(ttl) or ARGV[6])
    converted[#converted + 1] = i
  end
  redis.call('DEL', hash, zset)
end
return converted
