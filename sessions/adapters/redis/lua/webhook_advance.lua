-- A webhook endpoint's deliveries moved past a page of events (sessions.usecases.webhooks):
-- its cursor moves only while the caller holds the housekeeping lease and the cursor is
-- still where the caller read it, so a replica that lost the lease without knowing cannot
-- move it back or skip what the new holder delivers.
-- KEYS: the endpoint's state hash, the lease
-- ARGV: lease token, expected cursor ('' : none yet), new cursor, delivered, given up, now_ms
local state, lease = KEYS[1], KEYS[2]
if redis.call('GET', lease) ~= ARGV[1] then return 0 end
local cursor = redis.call('HGET', state, 'cursor') or ''
if cursor ~= ARGV[2] then return 0 end
redis.call('HSET', state, 'cursor', ARGV[3])
local delivered, given_up = tonumber(ARGV[4]), tonumber(ARGV[5])
if delivered > 0 then
  redis.call('HINCRBY', state, 'delivered', delivered)
  redis.call('HSET', state, 'lastDeliveredAt', ARGV[6])
end
if given_up > 0 then redis.call('HINCRBY', state, 'givenUp', given_up) end
return 1
