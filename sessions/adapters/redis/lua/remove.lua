-- Remove a session's contract keys and index entries, leaving a tombstone of the newest
-- version removed (the hash's, or the caller's floor when newer) so no older writer brings
-- them back. ARGV: member, tombstone_ttl_ms[, floor_incarnation, floor_revision]
-- returns the number of contract keys deleted (0 when there was nothing)
local member = ARGV[1]
local hash, status_key, expiry_key, bot_index, user = keys_of(member)
local held = redis.call('HMGET', hash, 'incarnation', 'revision')
if held[2] then
  bury(member, held[1] or '0', held[2], ARGV[2])
end
if ARGV[3] then
  bury(member, ARGV[3], ARGV[4], ARGV[2])
end
local deleted = redis.call('DEL', hash, status_key, expiry_key)
redis.call('ZREM', INDEX, member)
redis.call('ZREM', UNSYNCED, member)
redis.call('ZREM', DEADLINES, member)
redis.call('ZREM', bot_index, user)
return deleted
