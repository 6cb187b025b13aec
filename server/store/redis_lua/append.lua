-- Append one batch to a room's log, fenced: the only way an owner writes diffs.
--
-- KEYS[1]  meta   hash: epoch, type, head, cp (checkpoint seq), batch (last batch id)
-- KEYS[2]  log    stream: one entry per diff, ID "<seq>-0", field d = the encoded DIFF
-- KEYS[3]  acked  hash: client -> last processed aid
-- KEYS[4]  fence  counter: the newest lease's fencing token
-- KEYS[5]  answers hash: client -> msgpack [aid, answer], its last handler answer
-- ARGV[1]  fencing token of the writer ("" when the writer holds no lease)
-- ARGV[2]  epoch the writer is on
-- ARGV[3]  head the writer expects the log to end at
-- ARGV[4]  batch id (unique per writer and batch), so a retried call is recognised
-- ARGV[5]  channel to publish the batch on ("" for none)
-- ARGV[6]  the batch as published (encoded once by the writer)
-- ARGV[7]  n: number of diffs, then n pairs (seq, encoded DIFF)
-- then     m: number of clients, then m pairs (client, aid)
-- then     k: number of answers, then k pairs (client, msgpack [aid, answer])
--
-- Returns {1, head} once written, {1, head} again for a retry of the batch last
-- written, or {code, head} refusing it with nothing changed:
--   -1 the room's keys are gone (Redis lost them), -2 fenced (a newer lease
--   exists), -3 another epoch, -4 the log does not end where the writer expects.
-- Seqs must follow the head one by one: no seq is ever written twice in an epoch.
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'batch')
if not meta[1] then
  return {-1, 0}
end
local head = tonumber(meta[2])
local token = ARGV[1]
if token ~= '' and redis.call('GET', KEYS[4]) ~= token then
  return {-2, head}
end
if meta[1] ~= ARGV[2] then
  return {-3, head}
end
if meta[3] == ARGV[4] then
  return {1, head}
end
if head ~= tonumber(ARGV[3]) then
  return {-4, head}
end
local i = 8
local n = tonumber(ARGV[7])
for _ = 1, n do
  local seq = tonumber(ARGV[i])
  if seq ~= head + 1 then
    return redis.error_reply('diff ' .. ARGV[i] .. ' does not follow head ' .. head)
  end
  head = seq
  i = i + 2
end
i = 8
for _ = 1, n do
  redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 'd', ARGV[i + 1])
  i = i + 2
end
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local k = tonumber(ARGV[i] or '0')
i = i + 1
for _ = 1, k do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'head', head, 'batch', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return {1, head}
