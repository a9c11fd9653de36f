-- The window's total of each metric key, after ageing out.
--
-- KEYS[1] .. KEYS[#KEYS]  the metric keys' strings (ringsum:{K}:w), and nothing else
-- ARGV[1] .. ARGV[4]      as every script (common.lua); no others
--
-- Returns {slots aged out, total1, total2, ...}: a total is 12 bytes, a big-endian
-- int64 hi and uint32 lo (hi * 2^32 + lo), or '' when the key holds nothing (so a
-- live key summing to 0 is told apart from a gone one).

local oldest_kept = floor_div(now_us(), slot_us) - span

local result = { 0 }
for i = 1, #KEYS do
  local h, dropped = evict(load(KEYS[i]), oldest_kept)
  result[1] = result[1] + dropped
  result[i + 1] = h and struct.pack('>i8I4', h.hi, h.lo) or ''
end
return result
