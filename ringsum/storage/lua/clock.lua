-- The window's clock that every ringsum process on this Redis shares: ringsum:clock
-- holds the newest time any of them read (each raises it once a second), so a process
-- started after the Redis clock stepped back goes on from there, not from TIME, and no
-- window goes back over a restart (clock.py, RedisStorage._sync_clock).
--
-- KEYS[1]             ringsum:clock
-- ARGV[1] .. ARGV[4]  as every script (common.lua); no others
--
-- Returns {TIME in µs, the newest time held, this call's included}.

local time = redis.call('TIME')
local now = now_us()
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if now > held then
  held = now
  redis.call('SET', KEYS[1], integer(held))
end
return { integer(tonumber(time[1]) * 1000000 + tonumber(time[2])), integer(held) }
