-- Write a session's state with its revision; an older revision than the stored one is ignored.
-- lastSeen never moves backwards (a heartbeat may be newer than the writer's copy).
-- ARGV: member, revision, status, reason, seen_ms, ttl_ms, created_ms, phone, name, session_id,
--       ttl_seconds (as text, may be fractional)
-- returns {1, revision} when written, {0, stored_revision} when ignored
local member = ARGV[1]
local revision = tonumber(ARGV[2])
local hash, _, _, bot_index, user = keys_of(member)
local stored = tonumber(redis.call('HGET', hash, 'revision') or '-1')
if stored > revision then
  return {0, stored}
end
local seen_ms = tonumber(ARGV[5])
local prev_seen = redis.call('ZSCORE', bot_index, user)
if stored >= 0 and prev_seen and tonumber(prev_seen) > seen_ms then
  seen_ms = tonumber(prev_seen)
end
redis.call('HSET', hash, 'status', ARGV[3], 'reason', ARGV[4], 'revision', revision,
  'phoneNumber', ARGV[8], 'displayName', ARGV[9], 'sessionId', ARGV[10],
  'ttlSeconds', ARGV[11])
redis.call('HSETNX', hash, 'createdAt', iso(tonumber(ARGV[7])))
touch(member, ARGV[3], seen_ms, tonumber(ARGV[6]))
return {1, revision}
