-- Every entry of one metric key, oldest first, after ageing out: what sub-window
-- sums and series are computed from (in Python, exactly, by the same code as memory).
-- KEYS: hash, zset
-- Returns {slots aged out, now in µs, slot1, subtotal1, slot2, subtotal2, ...}.

local hash, zset = KEYS[1], KEYS[2]
local now = now_us()
local evicted = evict(hash, zset, floor_div(now, slot_us) - span)

local result = { evicted, integer(now) }
local slots = redis.call('ZRANGE', zset, 0, -1)
for first = 1, #slots, CHUNK do
  local chunk = { unpack(slots, first, math.min(first + CHUNK - 1, #slots)) }
  local subtotals = redis.call('HMGET', hash, unpack(chunk))
  for i = 1, #chunk do
    result[#result + 1] = chunk[i]
    result[#result + 1] = subtotals[i]
  end
end
return result
