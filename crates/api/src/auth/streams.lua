-- Per-key cap on open event streams, shared by every API replica. The key's streams are a
-- sorted set: member = one stream's id, score = when it lapses (ms, Redis's clock). A stream
-- renews its entry while it is open and removes it when it closes; the entry of a stream
-- whose API died lapses by itself.
-- KEYS[1]: the key's streams.  ARGV[1]: stream id.  ARGV[2]: cap (0 = renew only).
-- ARGV[3]: lifetime of an entry (ms).
-- Returns {counted (0/1), streams open}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local open = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[2])
if cap == 0 then
  -- Renew: only an entry that is still there (XX), so a lapsed stream is not revived.
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {1, open}
end
if open >= cap then
  return {0, open}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, open + 1}
