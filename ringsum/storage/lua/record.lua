-- Record one value per metric key, all in one atomic step; with an idempotency
-- marker, remember it in the same step, or record nothing when it is held already.
-- KEYS: hash1, zset1, hash2, zset2, ...   (each metric key once), then the marker
-- key when there is one (so #KEYS is odd exactly when a marker comes along).
-- ARGV[4]: TTL in ms (window + one tick); ARGV[5], ARGV[6], ...: one value per key,
-- a decimal integer (the caller sums a batch's values per key, exactly); with a
-- marker, then its fingerprint, status and body.
-- Returns the number of slots aged out; or, when the marker is held and has not
-- expired, {fingerprint, status, body} of the one held, having changed nothing; or
-- the error "RINGSUM_RANGE <n>" (the n-th key's sum would leave int64), raised
-- before any value is written.

local now = now_us()
local slot = floor_div(now, slot_us)
local ttl = ARGV[4]
local LIMIT = 9.2e18 -- under 2^63 by far more than rounding to doubles can hide
local pairs_count = math.floor(#KEYS / 2)
local marker = nil
if #KEYS % 2 == 1 then
  marker = KEYS[#KEYS]
  -- A marker lives as long as the value it guards may count: the window and one tick.
  local held = redis.call('HMGET', marker, 'expires', 'fingerprint', 'status', 'body')
  if held[1] and tonumber(held[1]) > now then
    return { held[2], held[3], held[4] }
  end
end

local evicted = 0
local targets = {}
for i = 1, pairs_count do
  local hash, zset, value = KEYS[2 * i - 1], KEYS[2 * i], ARGV[4 + i]
  evicted = evicted + evict(hash, zset, slot - span)
  -- Same slot: merge. The clock stepped back: book into the newest slot held,
  -- so slots stay ordered and nothing is lost.
  local target = integer(slot)
  local newest = redis.call('ZRANGE', zset, -1, -1, 'WITHSCORES')
  if newest[1] and tonumber(newest[2]) >= slot then
    target = newest[1]
  end
  local held = redis.call('HMGET', hash, 'total', target)
  local delta = tonumber(value)
  local total, subtotal = tonumber(held[1] or '0') + delta, tonumber(held[2] or '0') + delta
  if math.abs(total) >= LIMIT or math.abs(subtotal) >= LIMIT then
    return redis.error_reply('RINGSUM_RANGE ' .. i)
  end
  targets[i] = target
end

for i = 1, pairs_count do
  local hash, zset, value, target = KEYS[2 * i - 1], KEYS[2 * i], ARGV[4 + i], targets[i]
  redis.call('ZADD', zset, target, target)
  redis.call('HINCRBY', hash, target, value)
  redis.call('HINCRBY', hash, 'total', value)
  redis.call('PEXPIRE', hash, ttl)
  redis.call('PEXPIRE', zset, ttl)
end

if marker then
  local first = 5 + pairs_count
  redis.call('DEL', marker) -- an expired one the TTL has not dropped yet
  redis.call('HSET', marker, 'expires', integer(now + (span + 1) * slot_us),
    'fingerprint', ARGV[first], 'status', ARGV[first + 1], 'body', ARGV[first + 2])
  redis.call('PEXPIRE', marker, ttl)
end
return evicted
