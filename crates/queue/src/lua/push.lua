-- Enqueues tasks ready to run now, each written as apalis-redis 1.0.0's batch_push.lua writes
-- a task (payload in the data hash, a metadata hash of its own) but put straight on the ready
-- list. apalis' push never does that: it schedules every task at `max(run_at, now)`, so each
-- went into the scheduled set and waited there for a promotion (promote.lua), two more
-- writes of the set per task. A task whose payload Redis still holds is left alone (HSETNX),
-- as apalis leaves it, so pushing a job again is a no-op.
-- KEYS: {q}:data, {q}:active, {q}:signal, {q}:meta
-- ARGV: max_attempts, then task id and payload for each task
-- Returns how many were enqueued.
local meta = KEYS[4] .. ':'
local ids = {}
for i = 2, #ARGV, 2 do
    if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
        redis.call('HSET', meta .. ARGV[i], 'attempts', 0, 'max_attempts', ARGV[1],
            'status', 'Pending', 'idempotency_key', '')
        ids[#ids + 1] = ARGV[i]
    end
end
if #ids > 0 then
    -- In slices: Lua refuses to `unpack` beyond ~8,000 values.
    for s = 1, #ids, 1000 do
        redis.call('RPUSH', KEYS[2], unpack(ids, s, math.min(s + 999, #ids)))
    end
    -- As promote.lua and apalis' fetch do when tasks become ready (apalis' poller here polls
    -- on a timer; the signal is for any consumer that waits on it).
    redis.call('DEL', KEYS[3])
    redis.call('LPUSH', KEYS[3], 1)
end
return #ids
