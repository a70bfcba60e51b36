-- Settle the sentinel after a full restore: 'healing:<token>' becomes 'intact:<token>', but
-- only if it is still the value this restore set. Gone or changed, Redis lost its data again
-- meanwhile (or another restore began): the next pass restores again.
-- ARGV: token; returns 1 when settled
local key = PREFIX .. 'sentinel'
if redis.call('GET', key) == 'healing:' .. ARGV[1] then
  redis.call('SET', key, 'intact:' .. ARGV[1])
  return 1
end
return 0
