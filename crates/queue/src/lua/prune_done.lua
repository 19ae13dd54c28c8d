-- Forgets up to ARGV[2] tasks of a finished set (apalis' {q}:done or {q}:dead): their
-- payload in {q}:data, their {q}:meta:{id} hash and their set entry. Postgres keeps the
-- job's history (and the sweeper pushes again any job it still holds as live).
-- KEYS: {q}:done or {q}:dead, {q}:data
-- ARGV: the meta key prefix "{q}:meta:", the batch size
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[2], id)
    redis.call('DEL', ARGV[1] .. id)
end
return #ids
