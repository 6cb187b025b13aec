-- Extend a lease this node holds (called for every owned room in one pipeline).
--
-- KEYS[1]  lease  string "<node> <token>"
-- ARGV[1]  node id, ARGV[2] token, ARGV[3] TTL in milliseconds
--
-- Returns 1 when renewed, 0 when lost (expired, or taken by a newer owner).
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ' ' .. ARGV[2] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
