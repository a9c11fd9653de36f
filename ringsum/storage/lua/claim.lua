-- Redis Cluster only: bind an idempotency key to one request's fingerprint, before
-- the writes (one script per hash slot, each with its own marker) run.
-- Markers live on their metric keys' slots, so two requests naming other keys would
-- never meet there; the claim, one key per id, is where they do.
--
-- KEYS[1]             the claim key (ringsum:i:<id in hex>)
-- ARGV[1] .. ARGV[4]  as every script (common.lua)
-- ARGV[5]             TTL in ms (window + one tick)
-- ARGV[6]             the request's fingerprint
--
-- Returns the fingerprint already bound (unchanged), or false after binding ARGV[6].

local now = now_us()
local claim = KEYS[1]
local held = redis.call('HMGET', claim, 'expires', 'fingerprint')
if held[1] and tonumber(held[1]) > now then
  return held[2]
end
redis.call('DEL', claim)
redis.call('HSET', claim, 'expires', integer(now + (span + 1) * slot_us), 'fingerprint', ARGV[6])
redis.call('PEXPIRE', claim, integer(tonumber(ARGV[5]) + math.ceil(lead_us / 1000)))
return false
