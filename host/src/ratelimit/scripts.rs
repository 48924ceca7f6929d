//! Server-side Lua scripts: every change to a shared counter happens atomically in
//! Redis, one script call per batch of keys.
//!
//! The shared scripts implement *grants*: a unit reports what it admitted without
//! a reservation (`push`), gives back reserved slots it did not use (`ret`), and,
//! if it still sees traffic (`want`), receives a fair share of what is left
//! (`grant`), which it may then admit locally without asking again. Units active
//! on a key register in a per-key hash (`unit -> "ts:held"`), so the share is the
//! remaining capacity divided by the units that currently want it — on a unit's
//! first request for a key in a window, by at least all live units.

/// Shared helpers, prepended to the scripts that need them.
const UNITS_LUA: &str = r#"
local function others(units_k, unit, now, stale)
  local all = redis.call('HGETALL', units_k)
  local n, held = 0, 0
  for j = 1, #all, 2 do
    local u = all[j]
    if u ~= unit then
      local ts, h = string.match(all[j + 1], '^(%d+):(%d+)$')
      ts, h = tonumber(ts) or 0, tonumber(h) or 0
      if now - ts < stale then
        n = n + 1
        held = held + h
      else
        redis.call('HDEL', units_k, u)
      end
    end
  end
  return n, held
end

local function register(units_k, unit, now, want, held, ttl)
  if want then
    redis.call('HSET', units_k, unit, string.format('%d:%d', now, held))
    redis.call('PEXPIRE', units_k, ttl)
  else
    redis.call('HDEL', units_k, unit)
  end
end

-- What this unit holds after the call: its kept grant and the new one.
local function mine(want, keep, grant)
  if want then return keep + grant end
  return 0
end

local function share(avail, keep, n_others, n_live, first)
  if avail <= 0 then return 0 end
  local divisor = n_others + 1
  if first and n_live > divisor then divisor = n_live end
  local target = math.ceil((avail + keep) / divisor)
  return math.max(0, math.min(avail, target - keep))
end
"#;

/// Sliding window. KEYS per item: current window, previous window, units.
/// ARGV: unit, now, n_live, stale, count, prev_weight, ttl, then per item:
/// push, push_old, ret, ret_old, keep, want, first.
/// Returns per item `{grant, cur, prev, reserved}` (`reserved`: the grants every
/// live unit holds, counted in `cur` but not yet used).
pub fn window() -> String {
    format!(
        "{UNITS_LUA}{}",
        r#"
local unit, now, n_live, stale = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local count, weight, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local cur_k, prev_k, units_k = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 8 + 7 * i
  local push, push_old = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local ret, ret_old, keep = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local want, first = ARGV[a + 5] == '1', ARGV[a + 6] == '1'
  local prev = tonumber(redis.call('GET', prev_k) or '0')
  if push_old ~= 0 or ret_old ~= 0 then
    prev = math.max(0, prev + push_old - ret_old)
    redis.call('SET', prev_k, prev, 'PX', ttl)
  end
  local cur = math.max(0, tonumber(redis.call('GET', cur_k) or '0') + push - ret)
  local n, held = others(units_k, unit, now, stale)
  local grant = 0
  if want then
    grant = share(math.floor(count - prev * weight - cur), keep, n, n_live, first)
  end
  cur = cur + grant
  redis.call('SET', cur_k, cur, 'PX', ttl)
  register(units_k, unit, now, want, keep + grant, ttl)
  out[#out + 1] = {grant, cur, prev, held + mine(want, keep, grant)}
end
return out
"#
    )
}

/// Token bucket. KEYS per item: bucket hash (`tokens`, `ts`), units.
/// ARGV: unit, now, n_live, stale, rate per ms, burst, ttl, then per item:
/// push, ret, keep, want, first.
/// Tokens held as grants by live units count against the bucket's room, so the
/// pool plus every unit's holding never exceeds `burst`.
/// Returns per item `{grant, tokens (string), ts, reserved}` (`reserved`: the
/// tokens every live unit holds as grants).
pub fn bucket() -> String {
    format!(
        "{UNITS_LUA}{}",
        r#"
local unit, now, n_live, stale = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rate, burst, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {}
for i = 0, #KEYS / 2 - 1 do
  local k, units_k = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local a = 8 + 5 * i
  local push, ret, keep = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local want, first = ARGV[a + 3] == '1', ARGV[a + 4] == '1'
  local n, held = others(units_k, unit, now, stale)
  local cap = burst - held - keep
  local st = redis.call('HMGET', k, 'tokens', 'ts')
  local tokens, ts = tonumber(st[1]), tonumber(st[2])
  if tokens == nil or ts == nil then tokens, ts = cap, now end
  if now > ts then
    tokens = tokens + (now - ts) * rate
    ts = now
  end
  tokens = math.min(tokens, cap) - push + ret
  tokens = math.max(tokens, -burst)
  local grant = 0
  if want then
    grant = share(math.floor(tokens), keep, n, n_live, first)
    tokens = tokens - grant
  end
  redis.call('HSET', k, 'tokens', string.format('%.6f', tokens), 'ts', string.format('%d', ts))
  redis.call('PEXPIRE', k, ttl)
  register(units_k, unit, now, want, keep + grant, ttl)
  out[#out + 1] = {grant, string.format('%.6f', tokens), ts, held + mine(want, keep, grant)}
end
return out
"#
    )
}

/// Quota. KEYS per item: state hash (`start`, `end`, `count`), units.
/// ARGV: unit, now, n_live, stale, calls, calendar (1/0), rolling length,
/// calendar start, calendar end, then per item: push, ret, keep, want, first, epoch
/// (the period start the unit counted in, 0 if unknown).
/// A period that ended (or a newer calendar period) starts from zero; returns and
/// kept grants of another period are ignored.
/// Returns per item `{grant, count, start, end, reserved}` (`reserved`: the
/// grants every live unit holds, counted in `count` but not yet used).
pub fn quota() -> String {
    format!(
        "{UNITS_LUA}{}",
        r#"
local unit, now, n_live, stale = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local calls, calendar, len = tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7])
local pstart, pend = tonumber(ARGV[8]), tonumber(ARGV[9])
local out = {}
for i = 0, #KEYS / 2 - 1 do
  local k, units_k = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local a = 10 + 6 * i
  local push, ret, keep = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local want, first, epoch = ARGV[a + 3] == '1', ARGV[a + 4] == '1', tonumber(ARGV[a + 5])
  local st = redis.call('HMGET', k, 'start', 'end', 'count')
  local start, fin, cnt = tonumber(st[1]), tonumber(st[2]), tonumber(st[3]) or 0
  if calendar then
    if start == nil or pstart > start then start, fin, cnt = pstart, pend, 0 end
  elseif start == nil or fin == nil or now >= fin then
    start, fin, cnt = now, now + len, 0
  end
  if epoch ~= start then
    ret, keep = 0, 0
  end
  cnt = math.max(0, cnt + push - ret)
  local n, held = others(units_k, unit, now, stale)
  local grant = 0
  if want then
    grant = share(calls - cnt, keep, n, n_live, first)
  end
  cnt = cnt + grant
  redis.call('HSET', k, 'start', string.format('%d', start), 'end', string.format('%d', fin), 'count', cnt)
  redis.call('PEXPIREAT', k, fin + 86400000)
  register(units_k, unit, now, want, keep + grant, math.max(stale * 4, 60000))
  out[#out + 1] = {grant, cnt, start, fin, held + mine(want, keep, grant)}
end
return out
"#
    )
}

/// Unit heartbeat: KEYS[1] sorted set of units by expiry; ARGV: unit, now, ttl.
/// Returns the number of live units.
pub const HEARTBEAT: &str = r#"
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"#;

/// A unit leaving: KEYS[1] sorted set of units; ARGV[1] unit.
pub const LEAVE: &str = r#"
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

/// Plain counters. KEYS: counter keys; ARGV per key: delta, ttl ms.
/// Returns the counters' new values.
pub const COUNTERS: &str = r#"
local out = {}
for i = 1, #KEYS do
  local v = redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  out[i] = v
end
return out
"#;
