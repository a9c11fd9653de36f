-- The window's total of each metric key, after ageing out.
-- KEYS: hash1, zset1, hash2, zset2, ...
-- Returns {slots aged out, total1, total2, ...}; a total is '' when the key holds
-- nothing (so a live key summing to 0 is told apart from a gone one).

local now = now_us()
local oldest_kept = floor_div(now, slot_us) - span

local result = { 0 }
for i = 1, #KEYS / 2 do
  local hash = KEYS[2 * i - 1]
  result[1] = result[1] + evict(hash, KEYS[2 * i], oldest_kept)
  result[i + 1] = redis.call('HGET', hash, 'total') or ''
end
return result
