-- Remove a session's contract keys and index entries. ARGV: member
-- returns the number of contract keys deleted (0 when there was nothing)
local member = ARGV[1]
local hash, status_key, expiry_key, bot_index, user = keys_of(member)
local deleted = redis.call('DEL', hash, status_key, expiry_key)
redis.call('ZREM', INDEX, member)
redis.call('ZREM', bot_index, user)
return deleted
