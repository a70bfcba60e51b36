-- The operator synced a session up to a version: forget that it wanted a sync, unless a newer
-- version came since. ARGV: member, incarnation, revision ('' : forget whatever it was)
local member = ARGV[1]
local wanted = redis.call('HGET', WANTED, member)
if not wanted then return 0 end
if ARGV[2] ~= '' then
  local sep = string.find(wanted, ':', 1, true)
  if newer(string.sub(wanted, 1, sep - 1), string.sub(wanted, sep + 1), ARGV[2], ARGV[3]) then
    return 0
  end
end
return redis.call('HDEL', WANTED, member)
