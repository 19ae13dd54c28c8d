-- GCRA (generic cell rate algorithm) for one key, atomically: a token bucket of `limit`
-- requests refilled evenly over `period_ms`, stored as one number, the key's theoretical
-- arrival time (TAT, ms). Redis's clock is used so every replica agrees on "now".
-- KEYS[1]: the key's TAT.  ARGV[1]: limit (requests per period).  ARGV[2]: period_ms.
-- Returns {allowed (0/1), remaining, retry_after_ms, reset_ms}: reset_ms is when the full
-- quota is back.
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
local remaining = math.floor((period - (new_tat - now)) / interval)
return {1, remaining, 0, math.ceil(new_tat - now)}
