-- Hands a stopping worker's taken jobs back to the ready list and deregisters it
-- (apalis-redis 1.0.0 leaves both behind when a worker stops), with its metadata hash.
-- KEYS: {q}:inflight:{worker}, {q}:active, {q}:workers, {q}:workers:metadata:{worker}
-- ARGV: worker name
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
    redis.call('RPUSH', KEYS[2], id)
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
return #ids
