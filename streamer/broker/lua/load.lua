-- An edge's consistent start: {epoch, seq, epoch start ms, nonce of entry seq, event counter, market status,
-- latest quotes, quote entries, event entries} read in one atomic call, so the latest quotes are exactly
-- those after batch seq and the history ends at it. {false} when Redis holds no epoch yet, or only an epoch
-- retired by an edge (retire.lua) that the publisher has not reseeded: its `latest` is what Redis went back to,
-- older than what edges serve, and a client must not be resynced onto it.
--
-- KEYS: meta, quotes, events, latest (as in publish.lua)

local meta, quotes, events, latest = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local m = redis.call("HMGET", meta, "e", "s", "t", "n", "c", "st", "r")
if not m[1] or m[7] then
    return {false}
end
return {
    m[1], tonumber(m[2] or "0"), tonumber(m[3] or "0"), m[4] or "", tonumber(m[5] or "0"), m[6] or "",
    redis.call("HGETALL", latest),
    redis.call("XRANGE", quotes, "-", "+"),
    redis.call("XRANGE", events, "-", "+"),
}
