-- Forgets up to ARGV[2] tasks apalis has acked as done: their payload in {q}:data, their
-- {q}:meta:{id} hash and their {q}:done entry. Postgres keeps the job's history.
-- KEYS: {q}:done, {q}:data
-- ARGV: the meta key prefix "{q}:meta:", the batch size
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[2], id)
    redis.call('DEL', ARGV[1] .. id)
end
return #ids
