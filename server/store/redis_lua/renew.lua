-- Extend a lease this node holds (called for every owned room in one pipeline).
--
-- KEYS[1]  lease  string "<node> <token>"
-- KEYS[2]  meta   the room's hash (to tell a room Redis lost from a lease taken over)
-- ARGV[1]  node id, ARGV[2] token, ARGV[3] TTL in milliseconds
--
-- Returns 1 when renewed; 2 when the room's keys are gone (Redis lost them: restarted
-- empty, or evicted): nobody holds the room, so its owner writes its copy back; 0 when
-- lost (expired, or taken by a newer owner of a room that still exists).
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 2
end
return 0
