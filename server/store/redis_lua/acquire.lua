-- Take a room's lease if it is free (or already this node's), with a new fencing token.
--
-- KEYS[1]  lease  string "<node> <token>", expiring after the TTL
-- KEYS[2]  fence  counter, incremented at each acquisition (never reset while the keys live)
-- ARGV[1]  node id, ARGV[2] TTL in milliseconds
--
-- Returns the new token, or 0 when another node holds the lease.
local holder = redis.call('GET', KEYS[1])
if holder then
  local node = string.match(holder, '^(%S+) ')
  if node ~= ARGV[1] then
    return 0
  end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
