-- Write a session's state with its version (incarnation, revision). A write older than the
-- stored version, or not newer than what a removal took away (the tombstone), is ignored.
-- A new incarnation replaces the hash whole. lastSeen never moves backwards within an
-- incarnation (a heartbeat may be newer than the writer's copy).
-- A new version is also noted as wanting the operator's sync (sync_done.lua forgets it), so an
-- operator that restarts finds what changed while it was away without its full LIST.
-- A session that leaves `active` loses its heartbeat deadline (heartbeat.lua sets it again
-- once it is active and heartbeats).
-- ARGV: member, revision, status, reason, seen_ms, ttl_ms, created_ms, phone, name, session_id,
--       ttl_seconds (integer text), incarnation, heartbeat_timeout_seconds ('' : the default),
--       keep_ms, wants_sync ('1': note the new version in sync-wanted; '0' for a restore of
--       what the BotSession already says), then the session's events (see emit in
--       _common.lua): emitted whether the write is taken or not, each once
-- returns {1, revision} when written, {0, revision} when ignored
local member = ARGV[1]
local revision, incarnation = ARGV[2], ARGV[12]
emit(member, 16, tonumber(ARGV[14]))
local hash, _, _, bot_index, user = keys_of(member)
local stored = redis.call('HMGET', hash, 'incarnation', 'revision')
local stored_inc, stored_rev = stored[1] or '0', stored[2]
if stored_rev and newer(stored_inc, stored_rev, incarnation, revision) then
  return {0, tonumber(stored_rev)}
end
local gone_inc, gone_rev = buried(member)
if gone_inc and not newer(incarnation, revision, gone_inc, gone_rev) then
  return {0, tonumber(gone_rev)}
end
local seen_ms = tonumber(ARGV[5])
if stored_rev and tonumber(stored_inc) ~= tonumber(incarnation) then
  redis.call('DEL', hash)
elseif stored_rev then
  local prev_seen = redis.call('ZSCORE', bot_index, user)
  if prev_seen and tonumber(prev_seen) > seen_ms then
    seen_ms = tonumber(prev_seen)
  end
end
redis.call('HSET', hash, 'status', ARGV[3], 'reason', ARGV[4], 'revision', revision,
  'incarnation', incarnation, 'phoneNumber', ARGV[8], 'displayName', ARGV[9],
  'sessionId', ARGV[10], 'ttlSeconds', ARGV[11])
if ARGV[13] == '' then
  redis.call('HDEL', hash, 'heartbeatTimeoutSeconds')
else
  redis.call('HSET', hash, 'heartbeatTimeoutSeconds', ARGV[13])
end
if ARGV[3] ~= 'active' then
  redis.call('ZREM', DEADLINES, member)
end
redis.call('HSETNX', hash, 'createdAt', iso(tonumber(ARGV[7])))
if ARGV[15] == '1' and (not stored_rev or newer(incarnation, revision, stored_inc, stored_rev)) then
  redis.call('HSET', WANTED, member, incarnation .. ':' .. revision)
end
touch(member, ARGV[3], seen_ms, tonumber(ARGV[6]))
return {1, tonumber(revision)}
