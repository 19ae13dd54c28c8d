-- Queue figures in one atomic read of apalis-redis 1.0.0's keys.
-- KEYS: {q}:active, {q}:scheduled, {q}:workers, {q}:dead
-- ARGV: now (s), live_since (s), the inflight key prefix "{q}:inflight:"
local pending = redis.call('LLEN', KEYS[1]) + redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1])
local scheduled = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
local running = 0
for _, w in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    running = running + redis.call('SCARD', ARGV[3] .. w)
end
local dead = redis.call('SCARD', KEYS[4])
local live = redis.call('ZCOUNT', KEYS[3], ARGV[2], '+inf')
return {pending, scheduled, running, dead, live}
