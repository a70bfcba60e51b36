-- Remove the due sessions among ARGV[2..]: each is re-checked here, atomically, so a
-- session refreshed since it was read from the index is left alone. ARGV: now_ms, members...
-- returns {member, why, status, lastSeen, revision, reason} for each removed session;
-- why is 'inactive', 'expired', or 'gone' (Redis had already dropped the data).
local now_ms = tonumber(ARGV[1])
local removed = {}
for i = 2, #ARGV do
  local member = ARGV[i]
  local score = redis.call('ZSCORE', INDEX, member)
  if score then
    local hash, status_key, expiry_key, bot_index, user = keys_of(member)
    local f = redis.call('HMGET', hash, 'status', 'lastSeen', 'revision', 'reason')
    local why = nil
    if not f[1] then
      why = 'gone'
    elseif f[1] == 'inactive' then
      why = 'inactive'
    elseif tonumber(score) <= now_ms then
      why = 'expired'
    end
    if why then
      redis.call('DEL', hash, status_key, expiry_key)
      redis.call('ZREM', INDEX, member)
      redis.call('ZREM', bot_index, user)
      removed[#removed + 1] = {member, why, f[1] or '', f[2] or '', f[3] or '', f[4] or ''}
    end
  end
end
return removed
