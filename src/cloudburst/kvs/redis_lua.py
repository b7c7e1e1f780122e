"""The server-side Lua scripts of the Redis engine: each one reads, merges and writes one key atomically.

Layout (``docs/storage.md``): LWW, priority and causal values are a Redis string holding one lattice-type byte
followed by the ``anna.proto`` payload; sets and ordered sets are a sorted set, every member scored 0 (so Redis
keeps members in byte order), holding a marker member ``\\x00 <type byte>`` and one member ``\\x01 <element>`` per
element. The marker keeps an empty set present and records its lattice type; the ``\\x01`` prefix keeps elements
apart from the marker and leaves their byte order unchanged.

Redis runs Lua 5.1, whose ``<`` on strings follows the server's locale (``strcoll``), so byte order is compared
by hand; and its numbers are doubles, so 64-bit timestamps are compared on their varint bytes, never converted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cloudburst.protocol.messages import LatticeType


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, run with ``EVALSHA`` under the SHA1 of its source.

    Attributes:
        name: Names the script in errors.
        source: The Lua source.
        sha: The SHA1 Redis files the script under.
    """

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_PRELUDE = r"""
local byte, sub, char, concat = string.byte, string.sub, string.char, table.concat
local EMPTY = {1, 0}

-- The protobuf varint at pos: its value (exact below 2^53, plenty for lengths) and the position after it.
local function read_varint(s, pos)
  local value, scale = 0, 1
  while true do
    local b = byte(s, pos)
    if not b then error('cloudburst: truncated varint in a stored value') end
    pos = pos + 1
    value = value + (b % 128) * scale
    if b < 128 then return value, pos end
    scale = scale * 128
  end
end

local function write_varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = char(n)
  return concat(out)
end

-- Field number -> {first, last} byte range of the field's content in the message s[first..]: a varint's bytes,
-- a fixed64's eight bytes or a length-delimited field's data. The last occurrence wins, as in protobuf.
local function fields(s, first)
  local out, pos, n = {}, first, #s
  while pos <= n do
    local key
    key, pos = read_varint(s, pos)
    local wire, start = key % 8, pos
    if wire == 0 then
      local _
      _, pos = read_varint(s, pos)
    elseif wire == 1 then
      pos = pos + 8
    elseif wire == 2 then
      local length
      length, pos = read_varint(s, pos)
      start = pos
      pos = pos + length
    elseif wire == 5 then
      pos = pos + 4
    else
      error('cloudburst: unsupported protobuf wire type in a stored value')
    end
    if pos > n + 1 then error('cloudburst: truncated field in a stored value') end
    out[math.floor(key / 8)] = {start, pos - 1}
  end
  return out
end

-- -1, 0 or 1 as a[ra] sorts before, with or after b[rb] in byte order (Python's order on bytes). Equal chunks
-- are skipped with string equality, which is a memcmp, so long equal prefixes cost little.
local function compare_bytes(a, ra, b, rb)
  local la, lb = ra[2] - ra[1] + 1, rb[2] - rb[1] + 1
  local n = math.min(la, lb)
  local i, step = 0, 4096
  while i + step <= n and sub(a, ra[1] + i, ra[1] + i + step - 1) == sub(b, rb[1] + i, rb[1] + i + step - 1) do
    i = i + step
  end
  while i < n do
    local x, y = byte(a, ra[1] + i), byte(b, rb[1] + i)
    if x ~= y then return x < y and -1 or 1 end
    i = i + 1
  end
  if la == lb then return 0 end
  return la < lb and -1 or 1
end

-- Compares two uint64 varints by value without converting them (Lua numbers are doubles). Encoders write the
-- shortest form, so a longer varint is larger; equal lengths compare from the most significant group, the last
-- byte, down. An explicit zero counts as absent (proto3 omits zero).
local function compare_varints(a, ra, b, rb)
  local la, lb = ra[2] - ra[1] + 1, rb[2] - rb[1] + 1
  if la == 1 and byte(a, ra[1]) == 0 then la = 0 end
  if lb == 1 and byte(b, rb[1]) == 0 then lb = 0 end
  if la ~= lb then return la < lb and -1 or 1 end
  for i = la - 1, 0, -1 do
    local x, y = byte(a, ra[1] + i), byte(b, rb[1] + i)
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end

-- The lattice type byte stored under key, or nil when the key is absent.
local function stored_type(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return nil end
  if kind == 'string' then return redis.call('GETRANGE', key, 0, 0) end
  if kind == 'zset' then
    local marker = redis.call('ZRANGE', key, 0, 0)[1]
    if marker and #marker == 2 and byte(marker, 1) == 0 then return sub(marker, 2, 2) end
  end
  error('cloudburst: ' .. key .. ' holds a ' .. kind .. ' that is not a stored lattice')
end
"""

#: KEYS[1]; returns the stored lattice type byte followed by the ``anna.proto`` payload, or nil when absent.
GET = Script(
    "get",
    _PRELUDE
    + r"""
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then return false end
if kind == 'string' then return redis.call('GET', key) end
local out = {stored_type(key)}
local members = redis.call('ZRANGE', key, 0, -1)
for i = 2, #members do
  local member = members[i]
  out[i] = '\10' .. write_varint(#member - 1) .. sub(member, 2)
end
return concat(out)
""",
)

#: KEYS[1], ARGV = type byte, payload: merges an LWW (``\1``) or priority (``\6``) register.
#: Returns 0 when merged, or the stored type byte when it differs (nothing is written).
MERGE_REGISTER = Script(
    "merge_register",
    _PRELUDE
    + f"local LWW = '\\{LatticeType.LWW:d}'\n"
    + r"""
local key, lattice_type, payload = KEYS[1], ARGV[1], ARGV[2]

local function priority(s, range)
  if not range then return 0 end
  return (struct.unpack('<d', sub(s, range[1], range[2])))
end

-- Whether the incoming register beats the stored one: LWW keeps the greater (timestamp, value), priority the
-- smaller (priority, value), exactly as LwwLattice.merge and PriorityLattice.merge order them.
local function incoming_wins(stored)
  local new, old = fields(payload, 1), fields(stored, 2)
  local new_value, old_value = new[2] or EMPTY, old[2] or EMPTY
  if lattice_type == LWW then
    local order = compare_varints(payload, new[1] or EMPTY, stored, old[1] or EMPTY)
    if order == 0 then order = compare_bytes(payload, new_value, stored, old_value) end
    return order > 0
  end
  local new_priority, old_priority = priority(payload, new[1]), priority(stored, old[1])
  if new_priority ~= old_priority then return new_priority < old_priority end
  return compare_bytes(payload, new_value, stored, old_value) < 0
end

local current = stored_type(key)
if current == nil then
  redis.call('SET', key, lattice_type .. payload)
  return 0
end
if current ~= lattice_type then return current end
if incoming_wins(redis.call('GET', key)) then redis.call('SET', key, lattice_type .. payload) end
return 0
""",
)

#: KEYS[1], ARGV = type byte, element...: merges a set (``\2``) or ordered set (``\5``) by adding its elements.
#: Returns 0 when merged, or the stored type byte when it differs (nothing is written).
MERGE_SET = Script(
    "merge_set",
    _PRELUDE
    + r"""
local key, lattice_type = KEYS[1], ARGV[1]
local current = stored_type(key)
if current ~= nil and current ~= lattice_type then return current end
if current == nil then redis.call('ZADD', key, 0, '\0' .. lattice_type) end
-- ZADD in slices: Lua's unpack is limited by the C stack (about 8000 values).
local batch = {}
for i = 2, #ARGV do
  batch[#batch + 1] = 0
  batch[#batch + 1] = '\1' .. ARGV[i]
  if #batch >= 2000 then
    redis.call('ZADD', key, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('ZADD', key, unpack(batch)) end
return 0
""",
)

#: KEYS[1], ARGV = expected, new: writes ``new`` only if the key still holds the string ``expected`` (an empty
#: ``expected`` means "absent"). Returns 1 when written, 0 when the key changed since it was read.
COMPARE_AND_SET = Script(
    "compare_and_set",
    r"""
local key, expected, new = KEYS[1], ARGV[1], ARGV[2]
local kind = redis.call('TYPE', key)['ok']
if expected == '' then
  if kind ~= 'none' then return 0 end
elseif kind ~= 'string' or redis.call('GET', key) ~= expected then
  return 0
end
redis.call('SET', key, new)
return 1
""",
)

SCRIPTS = (GET, MERGE_REGISTER, MERGE_SET, COMPARE_AND_SET)
