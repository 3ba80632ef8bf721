"""The Redis store's Lua scripts, the client that runs them, and the keys they touch.

Each read-modify-write of the shared state is one script (see ``_redis``, whose docstring says
why the store is built this way). They are kept apart from the store that drives them so that
each can be read alone: a script's arguments and replies are documented above it, and
``Scripts`` is the typed call of each, which ``tests/test_redis.py`` checks against a plain Python
model of the same rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ._ratelimit import _PER_DAY, TOKEN_KINDS, Cost, Lease, Window

__all__ = [
    "Batch",
    "Claimed",
    "Scripts",
    "budget_key",
    "slot_keys",
    "starved_key",
    "token_amounts",
    "want_key",
]

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster
    from redis.commands.core import AsyncScript

# A batch of budget leased by a process is spent within this many seconds or given back (the
# store's rule, which the slot scripts' "starved" mark lasts as long as).
_BATCH_FRESH = 0.25
# Budget keys outlive their last write by two days (a per-day budget must survive the day).
_KEY_TTL_MS = 2 * int(_PER_DAY) * 1000

# Shared by every script: the time (the argument in tests, else Redis's clock) and number
# formatting that round-trips a double exactly.
_CLOCK = """
local function now_of(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function f(x) return string.format('%.17g', x) end
"""

# Shared by the budget scripts: the clock, and a member's buckets, kept in one hash as
# "name|part" fields (cap, rate, level, t) next to "blocked" (the time a Retry-After block ends).
_PRELUDE = (
    _CLOCK
    + """
local function load(key)
  local flat = redis.call('HGETALL', key)
  local buckets, blocked = {}, -math.huge
  for i = 1, #flat, 2 do
    local field, value = flat[i], tonumber(flat[i + 1])
    local sep = string.find(field, '|', 1, true)
    if sep then
      local name = string.sub(field, 1, sep - 1)
      local b = buckets[name]
      if not b then b = {}; buckets[name] = b end
      b[string.sub(field, sep + 1)] = value
    elseif field == 'blocked' then
      blocked = value
    end
  end
  return buckets, blocked
end
local function save(key, name, b)
  redis.call('HSET', key, name .. '|cap', f(b.cap), name .. '|rate', f(b.rate),
    name .. '|level', f(b.level), name .. '|t', f(b.t))
  if b.ceil then redis.call('HSET', key, name .. '|ceil', f(b.ceil)) end
end
local function refill(b, now)
  if now > b.t then b.level = math.min(b.cap, b.level + (now - b.t) * b.rate) end
  b.t = math.max(b.t, now)
end
local function wait_for(b, amount, now)
  refill(b, now)
  if amount <= b.level then return 0 end
  if amount > b.cap or b.rate <= 0 then return math.huge end
  return (amount - b.level) / b.rate
end
local function is_requests(name) return string.sub(name, 1, 8) == 'requests' end
-- Requests let through while the member has no request budget yet (before the vendor's first
-- reply teaches one): the budget the reply creates starts that much lower, since the reply's
-- "remaining" does not count those sent after it (a few too many are counted: those sent before
-- it, which it does count).
local function unmetered(buckets, n)
  if n == 0 then return end
  for name, _ in pairs(buckets) do
    if is_requests(name) then return end
  end
  redis.call('HINCRBYFLOAT', KEYS[1], 'unmetered', n)
  redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
end
local function amount(name, requests, tokens, output)
  if name == 'tokens' then return tokens end
  if name == 'input-tokens' then return tokens - output end
  if name == 'output-tokens' then return output end
  if is_requests(name) then return requests end
  return 0
end
local function period(name)
  if name == 'requests-per-day' then return 86400 end
  return 60
end
-- What replies reported, from ARGV[i] on: n, then n windows (kind, limit, remaining, reset_in;
-- '' for none). As ``TokenBucket.learn``: a reported limit replaces the capacity unless a
-- configured one (the bucket's ceiling) is lower; what is left only lowers the level (the reply
-- does not know of the calls still in flight); the refill is a whole budget a period at least,
-- faster when the time until it is whole says so.
local function learn(buckets, now, i)
  local n = tonumber(ARGV[i])
  local sent = tonumber(redis.call('HGET', KEYS[1], 'unmetered') or '0')
  for j = 0, n - 1 do
    local at = i + 1 + 4 * j
    local kind = ARGV[at]
    local limit, remaining, reset_in =
      tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
    local b, fresh = buckets[kind], false
    if not b and limit then
      b = {cap = limit, rate = limit / period(kind), level = limit, t = now}
      buckets[kind] = b
      fresh = is_requests(kind)
    end
    if b then
      refill(b, now)
      if limit and limit > 0 and (not b.ceil or limit < b.ceil) and limit ~= b.cap then
        b.cap = limit
        b.rate = limit / period(kind)
      end
      if remaining then
        local left = math.min(b.cap, remaining)
        b.level = math.min(b.level, left)
        local missing = b.cap - left
        if reset_in and reset_in > 0 and missing > 0 then
          b.rate = math.max(b.cap / period(kind), missing / reset_in)
        end
      end
      if fresh then b.level = b.level - sent end
      save(KEYS[1], kind, b)
    end
  end
  for name, _ in pairs(buckets) do
    if is_requests(name) then redis.call('HDEL', KEYS[1], 'unmetered'); break end
  end
end
-- The process's configured buckets (ARGV[5] specs from ARGV[6] on: name, cap, rate, seed
-- level), then the count and specs of the buckets it learned from the vendor alone; each
-- created at its seed level where Redis has none. A configured capacity is a ceiling (a
-- vendor's report may lower it, not raise it); a learned one is not.
local function seed(buckets, now)
  local n = tonumber(ARGV[5])
  local m = tonumber(ARGV[6 + 4 * n])
  for i = 0, n + m - 1 do
    local at = 6 + 4 * i
    if i >= n then at = at + 1 end
    local name = ARGV[at]
    if not buckets[name] then
      local cap = tonumber(ARGV[at + 1])
      buckets[name] = {cap = cap, rate = tonumber(ARGV[at + 2]),
        level = math.min(cap, tonumber(ARGV[at + 3])), t = now}
      if i < n then buckets[name].ceil = cap end
    end
  end
end
"""
)

# KEYS[1] budgets; ARGV: now, requests, tokens, output tokens (the part of tokens that is
# output), n, then n specs (name, cap, rate, seed) of the
# process's configured buckets, each created at its seed level if missing, then force ('1': take
# it whatever is left, for spend made while Redis was unreachable), then the keys' time to live.
# Returns {1, '0'} leased, or {0, seconds to wait} ('inf': never).
_LEASE = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local requests, tokens, output = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local buckets, blocked = load(KEYS[1])
seed(buckets, now)
local wait = math.max(0, blocked - now)
for name, b in pairs(buckets) do
  local need = amount(name, requests, tokens, output)
  if need > 0 then wait = math.max(wait, wait_for(b, need, now)) else refill(b, now) end
end
if ARGV[#ARGV - 1] == '1' then wait = 0 end
if wait <= 0 then
  for name, b in pairs(buckets) do b.level = b.level - amount(name, requests, tokens, output) end
  unmetered(buckets, requests)
end
for name, b in pairs(buckets) do save(KEYS[1], name, b) end
if next(buckets) ~= nil then redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV]) end
if wait > 0 then return {0, f(wait)} end
return {1, '0'}
"""
)

# KEYS[1] budgets, KEYS[2] starved (see _CLAIM); ARGV: now, want, back, fleet, n, then n specs
# (as for _LEASE), then windows replies reported since the last batch (as for _REPORT: learned
# first, as they came first), then for each token budget (tokens, input-tokens, output-tokens)
# want, need and back, then the keys' time to live. A batch of calls of one request each, and of
# tokens, for a process to spend locally. The requests and tokens it gives back (``back``; a
# token debt, negative, is taken) return first; then as many calls as it wants, at most its fair
# share (what is left divided by the processes sharing it, at least one). Each token budget gives
# what the process wants of it, at most its fair share but at least ``need`` (the cost of the
# call waiting for the batch, which must fit whole): the tokens are granted all together or not
# at all, not while the member is blocked nor while any budget has less than its need (then the
# wait is for the need: never, if it is more than the budget's capacity). Returns {calls granted,
# seconds to wait when what was needed was not granted, whether it has token budgets, seconds the
# member is blocked for, seconds the fleet's breaker stays open, 1 if a process waits for slots,
# then per token budget the tokens granted (-1: the member has no such budget)}: the block, so
# that a process refilling early knows to drop what it holds, the breaker, so that it reaches
# every process spending batches within ``_BATCH_FRESH``, and the waiting, so that a process
# holding slots claims again and learns its fair share.
_LEASE_BATCH = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local want, back, fleet = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local buckets, blocked = load(KEYS[1])
-- Calls given back return to the budgets they were taken from: not to one Redis lost and this
-- script makes again (seeded from the vendor's word, which counts them as unspent already).
local kept = {}
for name, _ in pairs(buckets) do kept[name] = true end
local configured = tonumber(ARGV[5])
learn(buckets, now, 7 + 4 * configured + 4 * tonumber(ARGV[6 + 4 * configured]))
seed(buckets, now)
local kinds = {'tokens', 'input-tokens', 'output-tokens'}
local tok = {}
for k, name in ipairs(kinds) do
  local at = #ARGV - 12 + 3 * k
  tok[name] = {want = tonumber(ARGV[at]), need = tonumber(ARGV[at + 1]),
    back = tonumber(ARGV[at + 2]), grant = -1}
end
local has_tokens = 0
for name, b in pairs(buckets) do
  refill(b, now)
  local t = tok[name]
  if is_requests(name) then
    if back > 0 and kept[name] then b.level = math.min(b.cap, b.level + back) end
  else
    has_tokens = 1
    if t and t.back ~= 0 and kept[name] then b.level = math.min(b.cap, b.level + t.back) end
  end
end
local grant = want
local wait = math.max(0, blocked - now)
if wait > 0 then grant = 0 end
local token_wait = 0
for name, b in pairs(buckets) do
  local t = tok[name]
  if is_requests(name) then
    grant = math.min(grant, math.floor(b.level), math.max(1, math.floor(b.level / fleet)))
  elseif t and t.need > 0 and t.need > b.level then
    token_wait = math.max(token_wait, wait_for(b, t.need, now))
  end
end
local tokens_granted = wait <= 0 and token_wait <= 0
if grant < 1 then
  grant = 0
  if wait <= 0 then
    for name, b in pairs(buckets) do
      if is_requests(name) then wait = math.max(wait, wait_for(b, 1, now)) end
    end
  end
else
  for name, b in pairs(buckets) do
    if is_requests(name) then b.level = b.level - grant end
  end
end
for name, b in pairs(buckets) do
  local t = tok[name]
  if t then
    t.grant = 0
    if tokens_granted then
      t.grant = math.max(t.need, math.min(t.want, math.floor(b.level / fleet)))
      t.grant = math.max(0, math.min(t.grant, math.floor(b.level)))
      b.level = b.level - t.grant
    end
  end
end
wait = math.max(wait, token_wait)
unmetered(buckets, grant - back)
for name, b in pairs(buckets) do save(KEYS[1], name, b) end
if next(buckets) ~= nil then redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV]) end
local breaker = tonumber(redis.call('HGET', KEYS[1], 'breaker') or '0')
local starved = 0
if tonumber(redis.call('GET', KEYS[2]) or '0') > now then starved = 1 end
return {grant, f(wait), has_tokens, f(math.max(0, blocked - now)), f(math.max(0, breaker - now)),
  starved, tok['tokens'].grant, tok['input-tokens'].grant, tok['output-tokens'].grant}
"""
)

# KEYS[1] budgets; ARGV: now, reserved tokens and output tokens, used tokens and output tokens.
# Each token budget gets back what the reservation took beyond the use, or gives the rest: a
# reply that used more than was reserved takes the level below zero, and later calls wait for
# the debt, as the vendor's bucket would.
_SETTLE = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local tokens, output = tonumber(ARGV[2]), tonumber(ARGV[3])
local used, used_output = tonumber(ARGV[4]), tonumber(ARGV[5])
local buckets = load(KEYS[1])
for name, b in pairs(buckets) do
  if not is_requests(name) then
    refill(b, now)
    local change = amount(name, 0, tokens, output) - amount(name, 0, used, used_output)
    b.level = math.min(b.cap, b.level + change)
    save(KEYS[1], name, b)
  end
end
return 1
"""
)

# KEYS[1] budgets; ARGV: now, then reported windows (see ``learn``), then the keys' time to live.
_REPORT = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local buckets = load(KEYS[1])
learn(buckets, now, 2)
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
return 1
"""
)

# KEYS[1] budgets; ARGV: now, seconds, keys' time to live, channel, sender. Returns the seconds
# the member is now blocked for (the later of the current block and the new one). A block that
# ends later than the current one is announced on the channel (when one is given) as
# "block <sender> <seconds> <budgets key>": every process listening stops spending the batch in
# hand at once (see ``RedisBudgetStore._signal``).
_BLOCK = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local _, blocked = load(KEYS[1])
local ends = math.max(blocked, now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'blocked', f(ends))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ends > blocked and ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], 'block ' .. ARGV[5] .. ' ' .. f(ends - now) .. ' ' .. KEYS[1])
end
return f(ends - now)
"""
)

# KEYS[1] budgets; ARGV: now, step (-1 a decrease, 1 an increase), ceiling, decrease factor,
# min interval, keys' time to live, channel, sender. The fleet's adaptive concurrency limit
# (field "limit"; the ceiling while it has none), changed by AIMD's rule (``_adaptive``) but at
# most once per interval for the whole fleet: a decrease if none was made within the interval
# ("limit_down"), an increase if no change was ("limit_changed"), so that N processes seeing the
# same overload shrink the limit once, not N times. A change is announced on the channel as
# "limit <sender> <limit> <budgets key>". Returns the fleet's limit.
_ADAPT = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local step, ceiling = tonumber(ARGV[2]), tonumber(ARGV[3])
local factor, interval = tonumber(ARGV[4]), tonumber(ARGV[5])
local got = redis.call('HMGET', KEYS[1], 'limit', 'limit_down', 'limit_changed')
local limit = math.min(ceiling, tonumber(got[1]) or ceiling)
local down, changed = tonumber(got[2]) or -math.huge, tonumber(got[3]) or -math.huge
local new = limit
if step < 0 and limit > 1 and now - down >= interval then
  new = math.max(1, math.min(limit - 1, math.floor(limit * factor)))
  redis.call('HSET', KEYS[1], 'limit_down', f(now))
elseif step > 0 and limit < ceiling and now - changed >= interval then
  new = limit + 1
end
if new ~= limit then
  redis.call('HSET', KEYS[1], 'limit', new, 'limit_changed', f(now))
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  if ARGV[7] ~= '' then
    redis.call('PUBLISH', ARGV[7], 'limit ' .. ARGV[8] .. ' ' .. new .. ' ' .. KEYS[1])
  end
end
return new
"""
)

# KEYS[1] budgets; ARGV: now. Read-only: {blocked seconds, name, cap, level, rate, ...}.
_CURRENT = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local buckets, blocked = load(KEYS[1])
local out = {f(math.max(0, blocked - now))}
for name, b in pairs(buckets) do
  refill(b, now)
  table.insert(out, name); table.insert(out, f(b.cap))
  table.insert(out, f(b.level)); table.insert(out, f(b.rate))
end
return out
"""
)

# The slot scripts: KEYS[1] a hash (process -> slots it holds), KEYS[2] a sorted set (process ->
# when its lease expires). Redis's count is the truth while a lease lives: a lease ends only by
# expiring (or by its process leaving), never because its count reached zero, so that a release
# racing an acquire of the same process cannot end it. A process whose lease expired is
# forgotten, with its slots. A process that finds its own lease gone (it was paused, or Redis was
# flushed) puts back the slots it still holds, so the fleet's count is true again, and is told it
# lapsed.
_SLOTS_PRELUDE = (
    _CLOCK
    + """
local function expire_dead(now)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', f(now))
  for _, p in ipairs(dead) do
    redis.call('HDEL', KEYS[1], p)
    redis.call('ZREM', KEYS[2], p)
  end
end
local function renew(now, proc, ttl, held)
  if redis.call('ZSCORE', KEYS[2], proc) then
    redis.call('ZADD', KEYS[2], f(now + ttl), proc)
    return 0
  end
  -- A process that holds nothing gets a lease too: the fleet's count (the share each keeps if
  -- Redis goes away) is of every live process, not of those that happened to hold slots.
  redis.call('ZADD', KEYS[2], f(now + ttl), proc)
  if held > 0 then
    redis.call('HSET', KEYS[1], proc, held)
    return 1
  end
  return 0
end
"""
)

# KEYS[3] the member's budgets (for its breaker). One slot for one call, for the calls that ask
# one by one (while the breaker is not closed). ARGV: now, process, limit, ttl, held (slots this
# process has in use: counted again if its lease lapsed). Returns {taken 0/1, lapsed, seconds
# the fleet's breaker stays open, probing (1: this call is the fleet's probe; 2: refused while
# another process's probe runs)}: none is taken while it is open. Once its open time is over, one process at a time probes (the
# first to ask; for ``ttl`` at most, in case it dies): the others are refused until its verdict.
_ACQUIRE = (
    _SLOTS_PRELUDE
    + """
local now, proc = now_of(ARGV[1]), ARGV[2]
local limit, ttl, held = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
expire_dead(now)
local lapsed = renew(now, proc, ttl, held)
local probing = 0
local opened = redis.call('HGET', KEYS[3], 'breaker')
if opened then
  opened = tonumber(opened)
  if opened > now then return {0, lapsed, f(opened - now), 0} end
  local probe = tonumber(redis.call('HGET', KEYS[3], 'probe') or '0')
  if probe > now and redis.call('HGET', KEYS[3], 'prober') ~= proc then
    return {0, lapsed, f(probe - now), 2}
  end
  probing = 1
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total >= limit then return {0, lapsed, '0', 0} end
redis.call('HINCRBY', KEYS[1], proc, 1)
redis.call('ZADD', KEYS[2], f(now + ttl), proc)
if probing == 1 then redis.call('HSET', KEYS[3], 'probe', f(now + ttl), 'prober', proc) end
return {1, lapsed, '0', probing}
"""
)

# KEYS[1] budgets; ARGV: now, seconds, keys' time to live. A process's breaker opened: the
# fleet's stays open until then (the later of this and any current time). Returns its seconds.
_TRIP = (
    _PRELUDE
    + """
local now = now_of(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'breaker') or '0')
local ends = math.max(current, now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'breaker', f(ends))
redis.call('HDEL', KEYS[1], 'probe', 'prober')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return f(ends - now)
"""
)

# KEYS[1] budgets. The fleet's probe succeeded: its breaker closes.
_CLOSE = """
redis.call('HDEL', KEYS[1], 'breaker', 'probe', 'prober')
return 1
"""

# KEYS[4] the processes' wants (process -> slots it would hold). ARGV: now, process, limit, ttl,
# keep, want. A process's batch of slots, which it spends and takes back locally: renews its lease,
# records its want, and sets its count to its want, as far as the fleet's free slots allow, but
# never below ``keep`` (the slots it has in use, or may take while this runs). When the wants of
# the live processes add up to more than the limit, each is held to a fair share (the limit
# water-filled over the wants, rounded up): a process over its share shrinks to it, as far as
# ``keep`` allows, so that one waiting gets slots on its next claim. While the fleet's breaker is
# open or half-open, a batch shrinks to ``keep`` (its calls ask one by one, for the probe).
# ``want`` -1: the process leaves (its lease, count and want are dropped). A process that gets
# less than its share marks the member "starved" for ``_BATCH_FRESH`` (KEYS[5], which every
# process's next budget batch reads). Returns {slots it now holds, lapsed, its share,
# live processes, seconds the breaker stays open, 1 if half-open, the fleet's adaptive
# concurrency limit ('' while it has none; KEYS[3], see _ADAPT)}.
_CLAIM = (
    _SLOTS_PRELUDE
    + f"local starved_for, key_ttl = {_BATCH_FRESH!r}, {_KEY_TTL_MS}\n"
    + """
local now, proc = now_of(ARGV[1]), ARGV[2]
local limit, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local keep, want, believed = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7] or '0')
expire_dead(now)
if want < 0 then
  redis.call('HDEL', KEYS[1], proc)
  redis.call('ZREM', KEYS[2], proc)
  redis.call('HDEL', KEYS[4], proc)
  return {0, 0, 0, redis.call('ZCARD', KEYS[2]), '0', 0, ''}
end
-- Lapsed: the lease was gone while the process believed it held slots (its calls may all have
-- ended since: then none is counted again, but the lapse is reported all the same).
local alive = redis.call('ZSCORE', KEYS[2], proc)
local lapsed = renew(now, proc, ttl, keep)
if not alive and believed > 0 then lapsed = 1 end
redis.call('ZADD', KEYS[2], f(now + ttl), proc)
if want > 0 then redis.call('HSET', KEYS[4], proc, want) else redis.call('HDEL', KEYS[4], proc) end
local wants, sum = {}, 0
local flat = redis.call('HGETALL', KEYS[4])
for i = 1, #flat, 2 do
  if redis.call('ZSCORE', KEYS[2], flat[i]) then
    local w = tonumber(flat[i + 1])
    table.insert(wants, {w, flat[i]})
    sum = sum + w
  else
    redis.call('HDEL', KEYS[4], flat[i])
  end
end
local fair = want
if sum > limit then
  -- Water-filled: the smallest wants whole, the rest an equal level, the slots left over one
  -- each to the first of them by name, so that the shares add up to the limit exactly.
  table.sort(wants, function(a, b) return a[1] < b[1] end)
  local left = limit
  for i, pw in ipairs(wants) do
    local rest = #wants - i + 1
    local level = math.floor(left / rest)
    if pw[1] > level then
      local names = {}
      for j = i, #wants do table.insert(names, wants[j][2]) end
      table.sort(names)
      fair = level
      for j = 1, left - level * rest do
        if names[j] == proc then fair = level + 1 end
      end
      break
    end
    left = left - pw[1]
  end
  fair = math.min(want, fair)
end
local open_for, half_open = 0, 0
local opened = redis.call('HGET', KEYS[3], 'breaker')
if opened then
  opened = tonumber(opened)
  if opened > now then open_for = opened - now else half_open = 1 end
end
local mine = tonumber(redis.call('HGET', KEYS[1], proc) or '0')
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
-- The share: the fair one, and no more than the others leave (a process paused past its lease
-- comes back counted over the limit: it gives back its slots as its calls end).
local share = math.min(fair, math.max(0, limit - (total - mine)))
local target = share
if opened then target = 0 end
local held = target
if target > mine then held = mine + math.max(0, math.min(target - mine, limit - total)) end
held = math.max(held, keep)
if held > 0 then redis.call('HSET', KEYS[1], proc, held) else redis.call('HDEL', KEYS[1], proc) end
if held < math.min(want, fair) and not opened then
  redis.call('SET', KEYS[5], f(now + starved_for), 'PX', key_ttl)
end
return {held, lapsed, share, redis.call('ZCARD', KEYS[2]), f(open_for), half_open,
        redis.call('HGET', KEYS[3], 'limit') or ''}
"""
)


def _arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _spec_args(
    specs: Sequence[tuple[str, float, float, float]],
    learned: Sequence[tuple[str, float, float, float]],
) -> list[str]:
    """The lease scripts' seeds: configured, then learned, each list after its length."""
    args: list[str] = []
    for seeds in (specs, learned):
        args.append(str(len(seeds)))
        for name, cap, rate, seed in seeds:
            args += [name, repr(float(cap)), repr(float(rate)), repr(float(seed))]
    return args


def _window_args(windows: Sequence[tuple[str, Window]]) -> list[str]:
    args = [str(len(windows))]
    for kind, window in windows:
        args += [kind, _arg(window.limit), _arg(window.remaining), _arg(window.reset_in)]
    return args


def _number(value: Any) -> float:
    return float(value.decode() if isinstance(value, bytes) else value)


class Scripts:
    """The Lua scripts, registered on one client, each a coroutine taking its keys and
    arguments. ``now`` is None in the store (Redis's clock) and a time only in tests."""

    def __init__(self, client: Redis | RedisCluster) -> None:
        self.client = client
        self._sources: list[str] = []
        self._loading: asyncio.Task[None] | None = None
        self._loaded = False
        self._lease = self._register(_LEASE)
        self._settle = self._register(_SETTLE)
        self._lease_batch = self._register(_LEASE_BATCH)
        self._report = self._register(_REPORT)
        self._block = self._register(_BLOCK)
        self._adapt = self._register(_ADAPT)
        self._current = self._register(_CURRENT)
        self._acquire = self._register(_ACQUIRE)
        self._trip = self._register(_TRIP)
        self._close = self._register(_CLOSE)
        self._claim = self._register(_CLAIM)
        # Public, as redis-py's: the heartbeat pipelines it, one per member, after ``load``
        # (see ``RedisBudgetStore.beat``).
        self.claim_script: AsyncScript = client.register_script(_CLAIM)

    def _register(self, source: str) -> Callable[..., Any]:
        script = self.client.register_script(source)
        self._sources.append(source)

        async def run(*, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
            if not self._loaded:
                await self.load()
            return await script(keys=keys, args=args)

        return run

    async def load(self) -> None:
        """Load every script once, before the first call runs one, in one task that the
        process's callers share. Without it, each of many callers that meet a Redis without the
        scripts loads them itself; on a Cluster, each load goes to every primary at once, and
        under that herd redis-py (8.1) was seen to raise an ``AttributeError`` from a connection
        torn down under it, which no caller could take for Redis being unreachable. (Scripts
        lost later, to a ``SCRIPT FLUSH`` or a restart, are loaded again by redis-py, per call.)
        """
        task = self._loading
        if task is None or (task.done() and not self._loaded):
            task = self._loading = asyncio.get_running_loop().create_task(self._load_all())
            # Its failure is seen by whoever awaits it; none may (all were cancelled).
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(task)

    async def _load_all(self) -> None:
        for source in self._sources:
            await self.client.script_load(source)
        self._loaded = True

    async def lease(
        self,
        key: str,
        requests: int,
        tokens: int,
        specs: Sequence[tuple[str, float, float, float]],
        now: float | None = None,
        *,
        output: int = 0,
        force: bool = False,
        learned: Sequence[tuple[str, float, float, float]] = (),
    ) -> float:
        """0.0 when leased, else the seconds to wait (``inf``: never). ``output``: the part of
        ``tokens`` that is output. ``force``: spend it whatever is left (the level may go below
        zero). ``learned``: seeds, like ``specs``, of the budgets only the vendor reported."""
        args: list[str] = [_arg(now), str(requests), str(tokens), str(output)]
        args += _spec_args(specs, learned)
        args += ["1" if force else "0", str(_KEY_TTL_MS)]
        ok, wait = await self._lease(keys=[key], args=args)
        return 0.0 if int(ok) else _number(wait)

    async def lease_batch(
        self,
        key: str,
        want: int,
        back: int,
        fleet: int,
        specs: Sequence[tuple[str, float, float, float]],
        now: float | None = None,
        reports: Sequence[tuple[str, Window]] = (),
        *,
        learned: Sequence[tuple[str, float, float, float]] = (),
        tokens: Sequence[tuple[float, float, float]] = (),
    ) -> Batch:
        """``reports``: windows replies reported since the last batch, learned first (as
        ``report``). ``learned``: seeds, like ``specs``, of the budgets only the vendor
        reported. ``tokens``: per token budget (``TOKEN_KINDS``, in order; none given: all
        zero) the tokens wanted, needed (the waiting call's cost) and given back."""
        args: list[str] = [_arg(now), str(want), str(back), str(fleet)]
        args += _spec_args(specs, learned)
        args += _window_args(reports)
        for wanted, needed, given in tokens or [(0, 0, 0)] * len(TOKEN_KINDS):
            args += [repr(float(wanted)), repr(float(needed)), repr(float(given))]
        args.append(str(_KEY_TTL_MS))
        got = await self._lease_batch(keys=[key, starved_key(key)], args=args)
        grant, wait, has_tokens, blocked, open_for, starved, *granted = got
        return Batch(
            int(grant),
            _number(wait),
            bool(int(has_tokens)),
            _number(blocked),
            _number(open_for),
            bool(int(starved)),
            tuple(None if int(g) < 0 else int(g) for g in granted),
        )

    async def settle(
        self,
        key: str,
        reserved: tuple[int, int],
        used: tuple[int, int],
        now: float | None = None,
    ) -> None:
        """``reserved`` and ``used``: (tokens, the part of them that is output)."""
        args = [_arg(now), str(reserved[0]), str(reserved[1]), str(used[0]), str(used[1])]
        await self._settle(keys=[key], args=args)

    async def report(
        self, key: str, windows: Sequence[tuple[str, Window]], now: float | None = None
    ) -> None:
        args = [_arg(now), *_window_args(windows), str(_KEY_TTL_MS)]
        await self._report(keys=[key], args=args)

    async def block(
        self,
        key: str,
        seconds: float,
        now: float | None = None,
        *,
        channel: str = "",
        sender: str = "",
    ) -> float:
        """Returns the seconds the member is now blocked for. A block that ends later than the
        current one is announced on ``channel`` (none: not announced)."""
        args = [_arg(now), repr(float(seconds)), str(_KEY_TTL_MS), channel, sender]
        return _number(await self._block(keys=[key], args=args))

    async def adapt(
        self,
        key: str,
        step: int,
        ceiling: int,
        factor: float,
        interval: float,
        now: float | None = None,
        *,
        channel: str = "",
        sender: str = "",
    ) -> int:
        """Move the fleet's adaptive concurrency limit one ``step`` (-1 down, 1 up) if no
        change of that kind was made within ``interval`` (see ``_ADAPT``); returns the fleet's
        limit, changed or not."""
        args = [
            _arg(now),
            str(step),
            str(ceiling),
            repr(float(factor)),
            repr(float(interval)),
            str(_KEY_TTL_MS),
            channel,
            sender,
        ]
        return int(await self._adapt(keys=[key], args=args))

    async def current(
        self, key: str, now: float | None = None
    ) -> tuple[float, dict[str, tuple[float, float, float]]]:
        """The block's seconds left, and per bucket (capacity, level, rate)."""
        out = await self._current(keys=[key], args=[_arg(now)])
        buckets = {}
        for i in range(1, len(out), 4):
            name = out[i].decode() if isinstance(out[i], bytes) else str(out[i])
            buckets[name] = (_number(out[i + 1]), _number(out[i + 2]), _number(out[i + 3]))
        return _number(out[0]), buckets

    async def acquire(
        self,
        keys: Sequence[str],
        process: str,
        limit: int,
        ttl: float,
        held: int,
        now: float | None = None,
    ) -> tuple[bool, bool, float, int]:
        """(taken, lapsed, open_for, probing): whether a slot was taken, whether this process's
        lease had lapsed (its slots are counted again), the seconds the fleet's breaker stays
        open (or its probe, another process's, may take), and 1 if this call is the fleet's
        half-open probe, 2 if it was refused because another process's probe runs."""
        taken, lapsed, open_for, probing = await self._acquire(
            keys=list(keys), args=[_arg(now), process, str(limit), repr(float(ttl)), str(held)]
        )
        return bool(int(taken)), bool(int(lapsed)), _number(open_for), int(probing)

    async def close(self, key: str) -> None:
        """The fleet's half-open probe succeeded: close its breaker."""
        await self._close(keys=[key])

    async def trip(self, key: str, seconds: float, now: float | None = None) -> float:
        """Open the fleet's breaker for ``seconds`` (or longer, if it already is)."""
        left = await self._trip(keys=[key], args=[_arg(now), repr(float(seconds)), _KEY_TTL_MS])
        return _number(left)

    async def claim(
        self,
        keys: Sequence[str],
        process: str,
        limit: int,
        ttl: float,
        keep: int,
        want: int,
        now: float | None = None,
        believed: int = 0,
    ) -> Claimed:
        """This process's batch of slots (see ``_CLAIM``): ``keep`` it holds at least, ``want``
        it would hold (-1: it leaves)."""
        got = await self._claim(
            keys=list(keys), args=self.claim_args(process, limit, ttl, keep, want, now, believed)
        )
        return Claimed.of(got)

    def claim_args(
        self,
        process: str,
        limit: int,
        ttl: float,
        keep: int,
        want: int,
        now: float | None,
        believed: int = 0,
    ) -> list[str]:
        """``believed``: the slots the process believes it holds (a lapse is reported if its
        lease is gone while it holds any)."""
        return [
            _arg(now),
            process,
            str(limit),
            repr(float(ttl)),
            str(keep),
            str(want),
            str(believed),
        ]


class Batch(NamedTuple):
    """What ``_LEASE_BATCH`` answered: the calls granted, the seconds to wait when what was
    needed was not granted, whether the member has token budgets, the seconds it is blocked
    for, the seconds the fleet's breaker stays open, whether a process waits for slots, and per
    token budget (``TOKEN_KINDS``) the tokens granted (None: the member has no such budget)."""

    grant: int
    wait: float
    has_tokens: bool
    blocked: float
    open_for: float
    starved: bool
    tokens: tuple[int | None, ...] = (None, None, None)


def token_amounts(cost: Cost | Lease) -> tuple[int, int, int]:
    """What ``cost`` takes from each of ``TOKEN_KINDS``: a batch's token budgets, in that
    order in ``_LEASE_BATCH``'s arguments."""
    return (cost.tokens, cost.tokens - cost.output_tokens, cost.output_tokens)


@dataclass(frozen=True, slots=True)
class Claimed:
    """What ``_CLAIM`` answered: the slots the process now holds, whether its lease had lapsed,
    its fair share, the processes holding leases, the seconds the fleet's breaker stays open and
    whether it is half-open, and the fleet's adaptive concurrency limit (None while it has
    none)."""

    held: int
    lapsed: bool
    share: int
    fleet: int
    open_for: float
    half_open: bool
    limit: int | None = None

    @classmethod
    def of(cls, reply: Any) -> Claimed:
        held, lapsed, share, fleet, open_for, half_open, limit = reply
        return cls(
            int(held),
            bool(int(lapsed)),
            int(share),
            int(fleet),
            _number(open_for),
            bool(int(half_open)),
            int(limit) if limit else None,
        )


def budget_key(prefix: str, member: str) -> str:
    return f"{prefix}:{{{member}}}:budgets"


def slot_keys(prefix: str, member: str) -> tuple[str, str, str]:
    """The slot scripts' keys: who holds how many, whose lease ends when, and the budgets (where
    the fleet's breaker is kept). ``_CLAIM`` takes ``want_key`` after them."""
    return (
        f"{prefix}:{{{member}}}:slots",
        f"{prefix}:{{{member}}}:alive",
        budget_key(prefix, member),
    )


def want_key(prefix: str, member: str) -> str:
    """Who would hold how many of the member's slots (``_CLAIM``'s fair shares)."""
    return f"{prefix}:{{{member}}}:wants"


def starved_key(budgets: str) -> str:
    """Until when a process waits for the member's slots (``_CLAIM`` sets it, ``_LEASE_BATCH``
    reads it), next to the member's budgets key ``budgets``: a key of its own, so that it never
    makes a budgets hash with no budget in it."""
    return budgets.removesuffix(":budgets") + ":starved"
