-- A sliding-window log: at most ARGV[1] requests per key in any ARGV[2] ms.
--
-- KEYS[1]  a sorted set: one member per request, scored with its time in ms.
-- ARGV[1]  limit
-- ARGV[2]  window in ms; a request made at or before now - window is out of the window
-- ARGV[3]  operation: allow (trim, then record the request if there is room) | peek (only look)
-- ARGV[4]  now in ms, or '' for the server's clock (TIME)
-- ARGV[5]  the request's member, unique (allow only)
--
-- Returns {allowed (0|1), requests in the window (after recording this one), retry after (ms; 0 when
-- allowed)}.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local op = ARGV[3]
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local from = now - window

local function retry()
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', from), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return tonumber(oldest[2]) + window - now
end

if op == 'peek' then
  local n = redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', from), '+inf')
  if n < limit then return {1, n, 0} end
  return {0, n, retry()}
elseif op ~= 'allow' then
  return redis.error_reply('ERR sliding window: unknown operation ' .. tostring(op))
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', from))
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  return {0, n, retry()}
end
redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[5])
redis.call('PEXPIRE', KEYS[1], window)
return {1, n + 1, 0}
