//! The two Lua scripts that make a channel's log safe to share between nodes.
//!
//! Redis runs a script atomically, so "append to the log, bump the seq, store the
//! snapshot, publish to the other nodes" is one step that no reader can see half
//! done, and "read seq, history or snapshot" is one consistent picture.
//! Both touch only keys of one channel (one hash slot, see [`super::keys`]).

/// Append a durable message.
///
/// KEYS: meta, log, snap.
/// ARGV: message (no seq), snapshot, has-snapshot (`1`/`0`), origin (`''`: none),
/// epoch to create the log with, max messages, max age in ms, publish command
/// (`PUBLISH` or `SPUBLISH`), topic.
///
/// Returns the new seq, or 0 when `origin` is not above the channel's highest
/// origin (the message was appended before: a replay).
pub(crate) const APPEND: &str = r#"
local origin = ARGV[4]
if origin ~= '' then
  local taken = redis.call('HGET', KEYS[1], 'origin')
  if taken and tonumber(taken) >= tonumber(origin) then return 0 end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if origin ~= '' then redis.call('HSET', KEYS[1], 'origin', origin) end
local seqs = string.format('%d', seq)
local stamped = string.sub(ARGV[1], 1, -2) .. ',"seq":' .. seqs .. '}'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], seqs .. '-' .. string.format('%d', now), 'm', stamped)
local cutoff = now - tonumber(ARGV[7])
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 8)) do
  if tonumber(string.match(entry[1], '-(%d+)$')) < cutoff then
    redis.call('XDEL', KEYS[2], entry[1])
  else
    break
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[7])
if ARGV[3] == '1' then redis.call('SET', KEYS[3], ARGV[2]) end
redis.call(ARGV[8], ARGV[9], 'd' .. epoch .. '\n' .. seqs .. '\n' .. stamped)
return seq
"#;

/// Read where a subscriber starts.
///
/// KEYS: meta, log, snap, ret.
/// ARGV: epoch to create the log with, resume epoch (`''`: none), resume seq,
/// durable channel (`1`/`0`).
///
/// Returns `{epoch, seq, recovered, messages, retained, snapshot}`: with
/// `recovered = 1`, `messages` are the stamped durable messages after the resume
/// seq, in order; with 0, `snapshot` is the stored snapshot (`''` when none).
/// `retained` is the flat key/value list of retained ephemeral values.
pub(crate) const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local seqs = string.format('%d', seq)
local retained = redis.call('HGETALL', KEYS[4])
if ARGV[4] == '1' and ARGV[2] == epoch then
  local after = tonumber(ARGV[3])
  if after == seq then return {epoch, seqs, 1, {}, retained, ''} end
  if after < seq then
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if first and tonumber(string.match(first[1], '^(%d+)')) <= after + 1 then
      local out = {}
      for _, entry in ipairs(redis.call('XRANGE', KEYS[2], string.format('%d', after + 1), '+')) do
        out[#out + 1] = entry[2][2]
      end
      return {epoch, seqs, 1, out, retained, ''}
    end
  end
end
local snap = redis.call('GET', KEYS[3]) or ''
return {epoch, seqs, 0, {}, retained, snap}
"#;
