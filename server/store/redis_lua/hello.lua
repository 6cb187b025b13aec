-- Number an agent HELLO of the room: the newer connection of a client id gets the higher
-- number, cluster-wide.
--
-- KEYS[1]  hellos  counter
-- ARGV[1]  the highest HELLO number the calling node knows of for the room
--
-- Returns the new number. A counter Redis lost (restarted empty) would start again at 1
-- and make a new connection look older than one numbered before; the floor keeps it above.
local n = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if n <= floor then
  n = floor + 1
  redis.call('SET', KEYS[1], n)
end
return n
