-- The DICT's anti-scanning token bucket (see tokenbucket.go for the semantics).
--
-- KEYS[1]  the bucket: a hash {b = balance, t = time of b in ms}; absent means full.
-- ARGV[1]  capacity
-- ARGV[2]  refill tokens, ARGV[3] refill period in ms: the balance grows continuously by
--          elapsed_ms * tokens / period, up to the capacity.
-- ARGV[4]  operation: check | take | charge | credit
-- ARGV[5]  amount: the minimum balance (check), the cost (take, charge) or the credit (credit)
-- ARGV[6]  now in ms, or '' for the server's clock (TIME)
--
-- Returns {allowed (0|1), balance (string, %.17g), retry after (ms, integer; 0 when allowed)}.
-- The order of the arithmetic matches localbucket.go so both give bit-identical balances.
local capacity = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local op = ARGV[4]
local amount = tonumber(ARGV[5])
local now
if ARGV[6] ~= '' then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local balance = capacity
local state = redis.call('HMGET', KEYS[1], 'b', 't')
if state[1] then
  balance = tonumber(state[1])
  local last = tonumber(state[2])
  if now > last then
    balance = balance + (now - last) * refill / period
  else
    now = last -- a clock that stepped back neither refills nor rewinds the bucket
  end
  if balance > capacity then
    balance = capacity
  end
end

local allowed = 1
local need = 1 -- after a charge or a credit: the balance a lookup needs
local write = false
if op == 'check' then
  need = amount
  if balance < amount then allowed = 0 end
elseif op == 'take' then
  need = amount
  if balance >= amount then
    balance = balance - amount
    write = true
  else
    allowed = 0
  end
elseif op == 'charge' then
  balance = balance - amount
  if balance < 1 then allowed = 0 end
  write = true
elseif op == 'credit' then
  balance = balance + amount
  if balance > capacity then balance = capacity end
  if balance < 1 then allowed = 0 end
  write = true
else
  return redis.error_reply('ERR token bucket: unknown operation ' .. tostring(op))
end

if write then
  if balance >= capacity then
    redis.call('DEL', KEYS[1]) -- a full bucket is the same as no bucket
  else
    redis.call('HSET', KEYS[1], 'b', string.format('%.17g', balance), 't', string.format('%d', now))
    -- expire when the bucket would be full again, so idle buckets vanish
    redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - balance) * period / refill))
  end
end

local retry = 0
if allowed == 0 then
  retry = math.ceil((need - balance) * period / refill)
end
return {allowed, string.format('%.17g', balance), retry}
