-- Refresh lastSeen, expiresAt, the TTLs and the indexes of a live session; never change
-- the phase. ARGV: member, now_ms
-- returns {status, lastSeen, expiresAt, revision}, or nil when Redis does not hold it;
-- an inactive session is returned as it is, not refreshed.
local member = ARGV[1]
local hash = keys_of(member)
local fields = redis.call('HMGET', hash, 'status', 'ttlSeconds', 'revision', 'lastSeen',
  'expiresAt')
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
return {status, iso(now_ms), iso(exp_ms), revision}
