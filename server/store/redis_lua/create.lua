-- Create a room, or replace it under a new epoch (a write-back after lost keys).
--
-- KEYS[1]  meta, KEYS[2] log, KEYS[3] acked, KEYS[4] fence, KEYS[5] state (checkpoint),
--          KEYS[6] answers
-- ARGV[1]  fencing token ("" when the writer holds no lease)
-- ARGV[2]  epoch, ARGV[3] type name, ARGV[4] checkpoint seq, ARGV[5] checkpoint state
-- ARGV[6]  "1": only if the room does not exist yet; "0": replace whatever is there
-- ARGV[7]  n: number of diffs after the checkpoint, then n pairs (seq, encoded DIFF)
-- then     m: number of clients, then m pairs (client, aid)
-- then     k: number of answers, then k pairs (client, msgpack [aid, answer])
--
-- Returns 1 when written, 0 when ARGV[6] is "1" and the room exists, -2 when fenced.
local token = ARGV[1]
if token ~= '' and redis.call('GET', KEYS[4]) ~= token then
  return -2
end
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6])
local head = tonumber(ARGV[4])
local i = 8
local n = tonumber(ARGV[7])
for _ = 1, n do
  redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 'd', ARGV[i + 1])
  head = tonumber(ARGV[i])
  i = i + 2
end
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local k = tonumber(ARGV[i])
i = i + 1
for _ = 1, k do
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('SET', KEYS[5], ARGV[5])
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'type', ARGV[3], 'head', head,
  'cp', ARGV[4], 'batch', '')
return 1
