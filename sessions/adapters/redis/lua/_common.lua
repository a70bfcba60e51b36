-- Shared helpers, prepended to every script of this folder by sessions.adapters.redis.store.
-- Keys follow the contract: session:<botId>:<userId> (hash), session:status:<botId>:<userId>,
-- session:expiry:<botId>:<userId>; the project's indexes and tombstones live under PREFIX
-- (botsession: by default; sessions.adapters.redis.store.RedisKeys substitutes it when loading).
-- botId and userId never contain ':' (sessions.domain.model.validate_id).

-- epoch milliseconds -> 2025-01-01T00:00:00Z (civil-from-days, H. Hinnant)
local function iso(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local secs = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', y, m, d,
    math.floor(secs / 3600), math.floor((secs % 3600) / 60), secs % 60)
end

local PREFIX = '__PREFIX__'
local INDEX = PREFIX .. 'expiry'
-- member -> the first heartbeat (ms) whose lastSeen has not been copied to the BotSession yet
local UNSYNCED = PREFIX .. 'unsynced'
-- member -> when its heartbeat is lost (ms): active sessions that heartbeat, and only those
local DEADLINES = PREFIX .. 'heartbeat-deadline'
-- member -> "<incarnation>:<revision>": written here, not yet marked synced by the operator
local WANTED = PREFIX .. 'sync-wanted'

local function keys_of(member)
  local sep = string.find(member, ':', 1, true)
  local bot = string.sub(member, 1, sep - 1)
  local user = string.sub(member, sep + 1)
  return 'session:' .. member, 'session:status:' .. member, 'session:expiry:' .. member,
    PREFIX .. 'bot:' .. bot, user
end

-- refresh lastSeen/expiresAt, the native TTLs and both indexes; score = when it is due
local function touch(member, status, seen_ms, ttl_ms)
  local hash, status_key, expiry_key, bot_index, user = keys_of(member)
  local exp_ms = seen_ms + ttl_ms
  redis.call('HSET', hash, 'lastSeen', iso(seen_ms), 'expiresAt', iso(exp_ms))
  redis.call('PEXPIREAT', hash, exp_ms)
  redis.call('SET', status_key, status, 'PXAT', exp_ms)
  redis.call('SET', expiry_key, iso(exp_ms), 'PXAT', exp_ms)
  -- inactive sessions are due at once: the next sweep removes them
  redis.call('ZADD', INDEX, status == 'inactive' and seen_ms or exp_ms, member)
  redis.call('ZADD', bot_index, seen_ms, user)
  return exp_ms
end

-- Versions (sessions.domain.model.Version) order writes: the incarnation first, then the revision.
-- Each is passed and stored as decimal text; a hash without an incarnation field is 0.
local function newer(inc_a, rev_a, inc_b, rev_b)
  inc_a, rev_a, inc_b, rev_b = tonumber(inc_a), tonumber(rev_a), tonumber(inc_b), tonumber(rev_b)
  return inc_a > inc_b or (inc_a == inc_b and rev_a > rev_b)
end

-- A tombstone remembers the newest version a removal took away, for a while (ttl_ms), so a
-- writer holding that version or an older one cannot bring the session back.
local function tombstone_key(member)
  return PREFIX .. 'removed:' .. member
end

local function buried(member)
  local text = redis.call('GET', tombstone_key(member))
  if not text then return nil, nil end
  local sep = string.find(text, ':', 1, true)
  return string.sub(text, 1, sep - 1), string.sub(text, sep + 1)
end

local function bury(member, inc, rev, ttl_ms)
  local old_inc, old_rev = buried(member)
  if old_inc and not newer(inc, rev, old_inc, old_rev) then
    inc, rev = old_inc, old_rev
  end
  redis.call('SET', tombstone_key(member), inc .. ':' .. rev, 'PX', ttl_ms)
end

-- The session events (docs/architecture.md, "Session events"): one stream entry per
-- transition or removal, in version order. A marker per session holds the newest version
-- emitted, so every writer may pass the session's recent transitions: each goes out once
-- (while its marker lasts, keep_ms), and a writer that lost an emission is made good by the
-- next one. The stream keeps keep_ms of entries (trimmed by their ids, Redis's clock).
local EVENTS = PREFIX .. 'events'

-- first: where the events start in ARGV, 8 fields each: type, incarnation, revision, from,
-- to, reason, actor, at_ms; ascending versions. Returns how many were added.
local function emit(member, first, keep_ms)
  if first > #ARGV then return 0 end
  local marker_key = PREFIX .. 'emitted:' .. member
  local marker = redis.call('GET', marker_key)
  local last_inc, last_rev
  if marker then
    local sep = string.find(marker, ':', 1, true)
    last_inc, last_rev = string.sub(marker, 1, sep - 1), string.sub(marker, sep + 1)
  end
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - keep_ms
  local added = 0
  for i = first, #ARGV, 8 do
    local inc, rev = ARGV[i + 1], ARGV[i + 2]
    if not last_inc or newer(inc, rev, last_inc, last_rev) then
      redis.call('XADD', EVENTS, 'MINID', '~', math.max(oldest, 0), '*',
        'type', ARGV[i], 'session', member, 'incarnation', inc, 'revision', rev,
        'from', ARGV[i + 3], 'to', ARGV[i + 4], 'reason', ARGV[i + 5], 'actor', ARGV[i + 6],
        'at', iso(tonumber(ARGV[i + 7])))
      last_inc, last_rev = inc, rev
      added = added + 1
    end
  end
  if added > 0 then
    redis.call('SET', marker_key, last_inc .. ':' .. last_rev, 'PX', keep_ms)
  end
  return added
end
