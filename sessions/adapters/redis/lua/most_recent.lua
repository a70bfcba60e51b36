-- The bot's most recently seen session that Redis holds, in one round trip. ARGV: botId
-- returns {userId, {field, value, ...}} (the fields empty when the hash has just expired),
-- or nil when the bot has no session in Redis.
local bot = ARGV[1]
local users = redis.call('ZREVRANGE', PREFIX .. 'bot:' .. bot, 0, 0)
if #users == 0 then
  return nil
end
local hash = keys_of(bot .. ':' .. users[1])
return {users[1], redis.call('HGETALL', hash)}
