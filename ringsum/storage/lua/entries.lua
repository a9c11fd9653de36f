-- One metric key's string after ageing out: what sub-window sums and series are
-- computed from (in Python, exactly, by the same code as memory).
--
-- KEYS[1]             the metric key's string (ringsum:{K}:w)
-- ARGV[1] .. ARGV[4]  as every script (common.lua); no others
--
-- Returns {slots aged out, now in µs, the string as it stands ('' when gone)}.

local now = now_us()
local h, dropped = evict(load(KEYS[1]), floor_div(now, slot_us) - span)
return { dropped, integer(now), h and redis.call('GET', KEYS[1]) or '' }
