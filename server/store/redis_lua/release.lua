-- Give a lease back (graceful stop, idle unload) and tell the followers at once.
--
-- KEYS[1]  lease
-- ARGV[1]  node id, ARGV[2] token, ARGV[3] channel, ARGV[4] message (empty: tell nobody)
--
-- Returns 1 when released, 0 when the lease was not (or no longer) this one.
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ' ' .. ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
