-- Redis Cluster only: bind an idempotency key to one request's fingerprint, before
-- the writes (one script per hash slot, each with its own marker) run.
-- Markers live on their metric keys' slots, so two requests naming other keys would
-- never meet there; the claim, one key per id, is where they do.
-- KEYS: the claim key. ARGV[4]: TTL in ms; ARGV[5]: the request's fingerprint.
-- Returns the fingerprint already bound (unchanged), or false after binding ARGV[5].

local now = now_us()
local claim = KEYS[1]
local held = redis.call('HMGET', claim, 'expires', 'fingerprint')
if held[1] and tonumber(held[1]) > now then
  return held[2]
end
redis.call('DEL', claim)
redis.call('HSET', claim, 'expires', integer(now + (span + 1) * slot_us), 'fingerprint', ARGV[5])
redis.call('PEXPIRE', claim, ARGV[4])
return false
