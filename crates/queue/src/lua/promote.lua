-- Moves due tasks from apalis' scheduled set to its ready list, at most ARGV[2] per call,
-- oldest first, as apalis-redis 1.0.0's fetch_next.lua does for all of them at once: that
-- script `unpack`s every due id into one RPUSH, which Lua refuses beyond ~8,000 values
-- ("too many results to unpack"), so a backlog that large would fail every fetch for good.
-- KEYS: {q}:scheduled, {q}:active, {q}:signal
-- ARGV: now (s, apalis' scores), most ids to move
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
    redis.call('RPUSH', KEYS[2], unpack(ids))
    redis.call('ZREM', KEYS[1], unpack(ids))
    -- As fetch_next.lua: tell waiting workers there is work.
    redis.call('DEL', KEYS[3])
    redis.call('LPUSH', KEYS[3], 1)
end
return #ids
