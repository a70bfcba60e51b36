-- An API replica says it is serving. When the last word of any replica is older than
-- stale_ms (every replica was down, or none could reach Redis), bots could not heartbeat
-- meanwhile: the heartbeat-loss detection is held until now + hold_ms, so that every bot
-- gets one whole heartbeat timeout to be heard again (sessions.usecases.liveness).
-- ARGV: now_ms, stale_ms, hold_ms, keep_ms (how long the beacon outlives the last replica)
-- returns the hold's end (ms) when this call set one, else 0
local BEACON = PREFIX .. 'api:alive'
local HOLD = PREFIX .. 'heartbeat:hold-until'
local now_ms = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', BEACON) or '')
local held = 0
if last and now_ms - last > tonumber(ARGV[2]) then
  held = now_ms + tonumber(ARGV[3])
  local current = tonumber(redis.call('GET', HOLD) or '')
  if not current or current < held then
    redis.call('SET', HOLD, held, 'PXAT', held)
  end
end
if not last or now_ms > last then
  redis.call('SET', BEACON, now_ms, 'PX', ARGV[4])
end
return held
