-- Prepended to every ringsum script when it is loaded.
--
-- A metric key K lives in two Redis keys that share the hash tag {K}:
--   ringsum:{K}:h  hash: field "total" = the running total, field "<slot>" = that slot's subtotal
--   ringsum:{K}:z  sorted set of the slots held, scored by slot, so the oldest come first
-- Subtotals and totals stay decimal strings added with HINCRBY, which is exact int64
-- arithmetic: Lua numbers are doubles, exact only up to 2^53, so no sum ever passes
-- through one. Times and slots stay below 2^53 and are exact as Lua numbers.
--
-- ARGV[1] slot length in µs (1 in exact mode), ARGV[2] the window in slots,
-- ARGV[3] now in epoch µs, or '' to read the Redis server's clock (production;
-- the tests pass the app's frozen clock here).

local slot_us = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local CHUNK = 1000 -- unpack() puts every element on Lua's stack, which is limited

local function now_us()
  if ARGV[3] ~= '' then
    return tonumber(ARGV[3])
  end
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- floor(a / b) exactly: math.floor(a / b) rounds up when a / b falls a hair below an integer.
local function floor_div(a, b)
  local remainder = math.fmod(a, b)
  if remainder < 0 then
    remainder = remainder + b
  end
  return (a - remainder) / b
end

-- An integer as Redis wants it: tostring() would write 1.7e+15.
local function integer(n)
  return string.format('%.0f', n)
end

local function negated(decimal)
  if string.sub(decimal, 1, 1) == '-' then
    return string.sub(decimal, 2)
  end
  return '-' .. decimal
end

-- Drop the slots before oldest_kept, taking their subtotals off the total; delete
-- both structures once nothing is left. Returns how many slots were dropped.
local function evict(hash, zset, oldest_kept)
  local bound = '(' .. integer(oldest_kept)
  local old = redis.call('ZRANGEBYSCORE', zset, '-inf', bound)
  if #old == 0 then
    return 0
  end
  for first = 1, #old, CHUNK do
    local slots = { unpack(old, first, math.min(first + CHUNK - 1, #old)) }
    local subtotals = redis.call('HMGET', hash, unpack(slots))
    for i = 1, #slots do
      local subtotal = subtotals[i]
      if subtotal and subtotal ~= '0' then -- HINCRBY refuses '-0'
        redis.call('HINCRBY', hash, 'total', negated(subtotal))
      end
    end
    redis.call('HDEL', hash, unpack(slots))
  end
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', bound)
  if redis.call('ZCARD', zset) == 0 then
    redis.call('DEL', hash, zset)
  end
  return #old
end
