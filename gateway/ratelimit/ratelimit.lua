-- privaterouter rate limiter, script version: 1
-- IF YOU EDIT THIS SCRIPT, BUMP THE VERSION ABOVE. redis.py puts it in every key name, so replicas
-- running different scripts during a rolling deploy never read each other's state.
--
-- GCRA as an integer leaky bucket, a line-for-line mirror of gateway/ratelimit/gcra.py (read its
-- docstring for the why). One call is atomic: every limit is checked, then all are counted or none.
--
-- KEYS[i]  state of limit i: a hash {l = level, t = stamp in ms of Redis server time}
-- ARGV[1]  "hit" (check, then count all or nothing) or "consume" (count, never refuse)
-- ARGV[2 + 4 * (i - 1) ...]  tick_ms, width, rate, cost of limit i
-- Returns {allowed (0/1), refused index (1-based, 0 if allowed), retry_ms, remaining, reset_ms}.
-- Time is the server's TIME, never a client clock: replicas with skewed clocks still agree.

if redis.replicate_commands then
  redis.replicate_commands() -- Redis < 5: TIME before a write needs effects replication
end

local MAX_LEVEL = 9007199254740992 -- 2^53
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local check = ARGV[1] == 'hit'

local function ceil_div(a, b)
  return math.ceil(a / b)
end

local function ms_until(ticks, tick)
  if ticks <= 0 then
    return 0
  end
  return (math.floor(now_ms / tick) + ticks) * tick - now_ms
end

local function wait_ticks(level, cost, width, rate, capacity)
  if cost == 0 then
    local excess = level - capacity
    if excess < 0 then
      return 0
    end
    return math.floor(excess / rate) + 1
  end
  local excess = level + cost * width - capacity
  if excess <= 0 then
    return 0
  end
  return ceil_div(excess, rate)
end

local n = #KEYS
local params, levels = {}, {}
local worst, worst_wait = 0, 0
for i = 1, n do
  local base = 2 + (i - 1) * 4
  local p = {
    tick = tonumber(ARGV[base]), width = tonumber(ARGV[base + 1]),
    rate = tonumber(ARGV[base + 2]), cost = tonumber(ARGV[base + 3]),
  }
  p.capacity = p.rate * p.width
  params[i] = p
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = 0
  if state[1] and state[2] then
    level = tonumber(state[1])
    local elapsed = math.floor(now_ms / p.tick) - math.floor(tonumber(state[2]) / p.tick)
    if elapsed > 0 then
      level = math.max(0, level - elapsed * p.rate)
    end
  end
  levels[i] = level
  if check then
    local wait = ms_until(wait_ticks(level, p.cost, p.width, p.rate, p.capacity), p.tick)
    if wait > worst_wait then
      worst, worst_wait = i, wait
    end
  end
end

local allowed = worst == 0
if allowed then
  for i = 1, n do
    local p = params[i]
    if p.cost > 0 then
      local level = math.min(MAX_LEVEL, levels[i] + p.cost * p.width)
      levels[i] = level
      redis.call('HSET', KEYS[i], 'l', level, 't', now_ms)
      redis.call('PEXPIRE', KEYS[i], math.max(1, ms_until(ceil_div(level, p.rate), p.tick)))
    end
  end
end

local head = params[1]
local remaining = math.max(0, math.floor((head.capacity - levels[1]) / head.width))
local reset_ms = ms_until(ceil_div(levels[1], head.rate), head.tick)
return {allowed and 1 or 0, worst, worst_wait, remaining, reset_ms}
