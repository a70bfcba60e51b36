-- Remove due sessions: inactive ones, and expired ones (index score <= now_ms). Each removal
-- is decided and done here, in one atomic step with the reads it is based on, so a session a
-- heartbeat refreshed in the meantime is left alone and two sweepers never remove it twice.
-- Every removal leaves a tombstone (see _common.lua) of the version removed, kept tomb_ms.
-- ARGV: now_ms, limit, tomb_ms. It takes the first `limit` members due at now_ms from the
-- index and removes them: choosing and removing happen in the same script call, so no
-- heartbeat can come in between (sessions.usecases.sweep.sweep).
-- returns a flat list, 5 entries per removed session: member, status, lastSeen, revision,
-- incarnation.
-- The status tells why: '' = gone (Redis had already dropped the hash; its other keys and index
-- entries are removed now), 'inactive' = inactive, 'malformed' = an index member that is not
-- <botId>:<userId> (no session of ours; only its index entry is dropped, so one bad entry
-- written by someone else cannot stop every sweep), anything else = expired.
local now_ms = ARGV[1]
local limit = tonumber(ARGV[2])
local tomb_ms = ARGV[3]
local out = {}
local n = 0

local function is_malformed(member)
  return not string.find(member, ':', 1, true)
end

local function fields_of(member)
  if is_malformed(member) then return {'malformed'} end
  return redis.call('HMGET', 'session:' .. member, 'status', 'lastSeen', 'revision',
    'incarnation')
end

-- f: the HMGET of status, lastSeen, revision, incarnation
local function remove(member, f)
  if not is_malformed(member) then
    local hash, status_key, expiry_key, bot_index, user = keys_of(member)
    if f[3] then
      bury(member, f[4] or '0', f[3], tomb_ms)
    end
    redis.call('DEL', hash, status_key, expiry_key)
    redis.call('ZREM', bot_index, user)
    redis.call('ZREM', UNSYNCED, member)
    redis.call('ZREM', DEADLINES, member)
  end
  out[n + 1] = member
  out[n + 2] = f[1] or ''
  out[n + 3] = f[2] or ''
  out[n + 4] = f[3] or ''
  out[n + 5] = f[4] or ''
  n = n + 5
end

-- every member in this range is due: expired by its score, or inactive (score = lastSeen)
local members = redis.call('ZRANGEBYSCORE', INDEX, '-inf', now_ms, 'LIMIT', 0, limit)
for i = 1, #members do
  local member = members[i]
  remove(member, fields_of(member))
end
if #members > 0 then
  -- they are the index's lowest ranks (the range starts at -inf): one O(log N + k) call
  -- instead of one ZREM per member on the big index
  redis.call('ZREMRANGEBYRANK', INDEX, 0, #members - 1)
end
return out
