-- Record one value per metric key, all in one atomic step; with an idempotency
-- marker, remember it in the same step, or record nothing when it is held already.
-- KEYS: hash1, zset1, hash2, zset2, ...   (each metric key once), then on a single
-- Redis the listing index (a sorted set of key names), which the keys this call
-- creates join here, atomically (on Cluster it sits in another slot, so the caller
-- adds them with a follow-up command); then the marker's key when there is one.
-- ARGV[4]: TTL in ms (window + one tick); ARGV[5]: the marker (fingerprint, status
-- and body, packed by the caller), or '' without one; ARGV[6], ARGV[7], ...: one
-- value per key, a decimal integer (the caller sums a batch's values per key, exactly).
-- Returns {slots aged out, position of each key this call created, ...}; or, when the
-- marker's key holds one that has not expired, that marker, having changed nothing;
-- or the error "RINGSUM_RANGE <n>" (the n-th key's sum would leave int64), raised
-- before any value is written.

local now = now_us()
local slot = floor_div(now, slot_us)
local ttl = ARGV[4]
local LIMIT = 9.2e18 -- under 2^63 by far more than rounding to doubles can hide

local count = #ARGV - 5
local marker = ARGV[5] ~= '' and KEYS[#KEYS] or nil
local index = #KEYS - 2 * count - (marker and 1 or 0) == 1 and KEYS[2 * count + 1] or nil

if marker then
  -- A marker lives as long as the value it guards may count: the window and one tick.
  local held = redis.call('HMGET', marker, 'expires', 'marker')
  if held[1] and tonumber(held[1]) > now then
    return held[2]
  end
end

local evicted = 0
local targets = {}
local result = { 0 }
for i = 1, count do
  local hash, zset, value = KEYS[2 * i - 1], KEYS[2 * i], ARGV[5 + i]
  evicted = evicted + evict(hash, zset, slot - span)
  -- Same slot: merge. The clock stepped back: book into the newest slot held,
  -- so slots stay ordered and nothing is lost.
  local target = integer(slot)
  local newest = redis.call('ZRANGE', zset, -1, -1, 'WITHSCORES')
  if not newest[1] then
    result[#result + 1] = i -- nothing held (after ageing out): this call creates the key
  elseif tonumber(newest[2]) >= slot then
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

for i = 1, count do
  local hash, zset, value, target = KEYS[2 * i - 1], KEYS[2 * i], ARGV[5 + i], targets[i]
  redis.call('ZADD', zset, target, target)
  redis.call('HINCRBY', hash, target, value)
  redis.call('HINCRBY', hash, 'total', value)
  redis.call('PEXPIRE', hash, ttl)
  redis.call('PEXPIRE', zset, ttl)
end

if index then
  local prefix, suffix = #'ringsum:{', #'}:h' -- the metric key is the hash's name between them
  for i = 2, #result do
    local hash = KEYS[2 * result[i] - 1]
    redis.call('ZADD', index, 0, string.sub(hash, prefix + 1, -suffix - 1))
  end
end
if marker then
  redis.call('HSET', marker, 'expires', integer(now + (span + 1) * slot_us), 'marker', ARGV[5])
  redis.call('PEXPIRE', marker, ttl)
end
result[1] = evicted
return result
