-- Refresh lastSeen, expiresAt, the TTLs and the indexes of a live session; never change
-- the phase. An active session's heartbeat deadline moves to now + its heartbeat timeout
-- (the hash's heartbeatTimeoutSeconds, else default_ms; 0: none): set by a heartbeat
-- (arm = '1'), only moved by a report of the current phase (arm = '0'), so a bot that never
-- heartbeats never gets a deadline.
-- ARGV: member, now_ms, default_ms, arm
-- returns {status, lastSeen, expiresAt, revision}, or nil when Redis does not hold it;
-- an inactive session is returned as it is, not refreshed.
local member = ARGV[1]
local hash = keys_of(member)
local fields = redis.call('HMGET', hash, 'status', 'ttlSeconds', 'revision', 'lastSeen',
  'expiresAt', 'heartbeatTimeoutSeconds')
local status, ttl, revision = fields[1], fields[2], fields[3]
if not status then
  return nil
end
if status == 'inactive' then
  return {status, fields[4], fields[5], revision}
end
local now_ms = tonumber(ARGV[2])
local exp_ms = touch(member, status, now_ms, math.floor(tonumber(ttl) * 1000 + 0.5))
-- NX: the score stays the oldest heartbeat not copied yet, so the oldest are copied first
redis.call('ZADD', UNSYNCED, 'NX', now_ms, member)
if status == 'active' then
  local own = tonumber(fields[6] or '')
  local timeout_ms = own and own * 1000 or tonumber(ARGV[3])
  if timeout_ms > 0 and (ARGV[4] == '1' or redis.call('ZSCORE', DEADLINES, member)) then
    redis.call('ZADD', DEADLINES, now_ms + timeout_ms, member)
  end
end
return {status, iso(now_ms), iso(exp_ms), revision}
