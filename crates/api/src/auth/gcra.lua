-- GCRA (generic cell rate algorithm) for a batch of requests, atomically: per key a token
-- bucket of `limit` requests refilled evenly over `period_ms`, stored as one number, the
-- key's theoretical arrival time (TAT, ms). Redis's clock is used so every replica agrees on
-- "now". Requests are judged in order, so a key twice in the batch spends twice.
-- KEYS[i]: request i's key TAT.  ARGV[1]: period_ms.  ARGV[1 + i]: request i's limit.
-- Returns, per request, {verdict, remaining, retry_after_ms, reset_ms} flattened: verdict 1
-- allowed, 0 refused, 2 not judged (its key could not be read or written: that request alone
-- is let through); reset_ms is when the full quota is back.
local period = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local interval = period / limit
  local n = #out
  local stored = redis.pcall('GET', key)
  local tat = type(stored) == 'table' and stored.err and -1 or tonumber(stored or now)
  if tat == -1 or tat == nil then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 2, 0, 0, 0
  else
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - period
    if now < allow_at then
      out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, 0, math.ceil(allow_at - now), math.ceil(tat - now)
    else
      local set = redis.pcall('SET', key, tostring(new_tat), 'PX', math.ceil(new_tat - now))
      if type(set) == 'table' and set.err then
        out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 2, 0, 0, 0
      else
        out[n + 1], out[n + 2] = 1, math.floor((period - (new_tat - now)) / interval)
        out[n + 3], out[n + 4] = 0, math.ceil(new_tat - now)
      end
    end
  end
end
return out
