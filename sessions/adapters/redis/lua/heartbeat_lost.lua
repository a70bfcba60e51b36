-- Claim the active sessions whose heartbeat deadline has passed (score <= now_ms), up to
-- `limit`: their deadlines are removed and they are returned for the operator to make
-- inactive (HeartbeatLost). Choosing and claiming are one atomic step, so a heartbeat that
-- came first moved the deadline out of range and wins; a member no longer active (it moved
-- on, or Redis lost it) is only dropped from the deadlines.
-- ARGV: now_ms, limit
-- returns a flat list, 5 entries per claimed session, as sweep.lua: member, status,
-- lastSeen, revision, incarnation.
local members = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', ARGV[1], 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for i = 1, #members do
  local member = members[i]
  redis.call('ZREM', DEADLINES, member)
  local f = redis.call('HMGET', 'session:' .. member, 'status', 'lastSeen', 'revision',
    'incarnation')
  if f[1] == 'active' then
    out[#out + 1] = member
    out[#out + 1] = f[1]
    out[#out + 1] = f[2] or ''
    out[#out + 1] = f[3] or ''
    out[#out + 1] = f[4] or ''
  end
end
return out
