-- Which of the given jobs Redis no longer holds as live tasks (task id = job id). A job
-- apalis counts as finished (in {q}:done or {q}:dead) while Postgres says it must still run
-- is forgotten here, so the caller's push lands instead of being dropped as a duplicate.
-- KEYS: {q}:data, {q}:done, {q}:dead
-- ARGV: the meta key prefix "{q}:meta:", then the job ids
local missing = {}
for i = 2, #ARGV do
    local id = ARGV[i]
    if redis.call('SISMEMBER', KEYS[2], id) == 1 or redis.call('SISMEMBER', KEYS[3], id) == 1 then
        redis.call('HDEL', KEYS[1], id)
        redis.call('DEL', ARGV[1] .. id)
        redis.call('SREM', KEYS[2], id)
        redis.call('SREM', KEYS[3], id)
        table.insert(missing, id)
    elseif redis.call('HEXISTS', KEYS[1], id) == 0 then
        table.insert(missing, id)
    end
end
return missing
