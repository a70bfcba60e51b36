-- Forget the heartbeats whose lastSeen the operator copied to their BotSessions.
-- ARGV: member, copied lastSeen (ms), member, copied lastSeen (ms), ...
-- A member seen again after the copy (the bot index holds its newest lastSeen) stays, its
-- score moved to that heartbeat; one seen no later is forgotten. Returns how many stayed.
local stayed = 0
for i = 1, #ARGV, 2 do
  local member = ARGV[i]
  local _, _, _, bot_index, user = keys_of(member)
  local seen = redis.call('ZSCORE', bot_index, user)
  if seen and tonumber(seen) > tonumber(ARGV[i + 1]) then
    redis.call('ZADD', UNSYNCED, 'XX', seen, member)
    stayed = stayed + 1
  else
    redis.call('ZREM', UNSYNCED, member)
  end
end
return stayed
