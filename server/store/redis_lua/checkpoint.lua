-- Record a checkpoint of a room's state, fenced, and trim the log behind it.
--
-- KEYS[1]  meta, KEYS[2] log, KEYS[3] acked, KEYS[4] fence, KEYS[5] state
-- ARGV[1]  fencing token ("" when the writer holds no lease)
-- ARGV[2]  epoch the state belongs to
-- ARGV[3]  checkpoint seq (at most the head: a checkpoint is never ahead of the log)
-- ARGV[4]  the state at that seq, encoded
-- ARGV[5]  log entries to keep at or below the checkpoint (replay after a restart)
-- ARGV[6]  m: number of clients, then m pairs (client, aid): every aid processed
--          up to the checkpoint
--
-- The log is trimmed only below (checkpoint seq - ARGV[5] + 1): never past the
-- checkpoint, so checkpoint + log always rebuilds the head.
-- Returns 1, or -1 when the room is gone, -2 fenced, -3 another epoch, -4 a
-- checkpoint ahead of the head.
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head')
if not meta[1] then
  return -1
end
local token = ARGV[1]
if token ~= '' and redis.call('GET', KEYS[4]) ~= token then
  return -2
end
if meta[1] ~= ARGV[2] then
  return -3
end
local seq = tonumber(ARGV[3])
if seq > tonumber(meta[2]) then
  return -4
end
redis.call('SET', KEYS[5], ARGV[4])
redis.call('HSET', KEYS[1], 'cp', seq)
local m = tonumber(ARGV[6])
local i = 7
for _ = 1, m do
  local current = tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
local keep_from = seq - tonumber(ARGV[5]) + 1
if keep_from > 1 then
  redis.call('XTRIM', KEYS[2], 'MINID', keep_from .. '-0')
end
return 1
