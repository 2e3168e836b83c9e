-- One atomic publish: a batch of quotes (kind "q") or an event (kind "e": market status, alert).
-- Fencing: only the current holder of the lease key may publish. Numbering: a batch takes the next seq of
-- the epoch and is appended to the capped quotes stream under the entry id "<seq>-0"; an event is appended
-- to the events stream under "<seq>-<n>" (after batch <seq>, before batch <seq>+1), with its own counter.
-- Rollback: the caller passes the position it last published; a Redis that has no epoch, or one older than
-- that position (restarted empty, from an older RDB snapshot, a promoted async replica), must not number
-- again from where it stands: the caller is told to reseed, and its full batch (every latest quote it
-- holds) starts a new epoch at seq 1. An epoch retired by an edge (retire.lua) is reseeded the same way.
--
-- KEYS: meta (hash: e epoch, t epoch start ms, s seq, n nonce of entry s, c event counter, r retired,
--       st latest market status), quotes (stream), events (stream), latest (hash symbol -> quote), lease
-- ARGV: 1 lease token, 2 last epoch ("" = none), 3 last seq, 4 last epoch start ms, 5 last nonce,
--       6 a fresh epoch name, 7 this entry's nonce, 8 MAXLEN, 9 kind "q" | "e",
--       10 "1" when the batch holds every latest quote of the caller (allowed to start an epoch),
--       q: 11 timestamp, 12 market status ("" = none), 13.. symbol, quote, symbol, quote ...
--       e: 11 event kind, 12 event JSON
-- Returns {"fenced"} | {"reseed"} | {"ok", epoch, seq, epoch start ms, entry id, nonce of entry seq}

local meta, quotes, events, latest, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

if redis.call("GET", lease) ~= ARGV[1] then
    return {"fenced"}
end

local m = redis.call("HMGET", meta, "e", "s", "t", "n", "r")
local epoch, seq, start, nonce, retired = m[1], tonumber(m[2] or "0"), tonumber(m[3] or "0"), m[4] or "", m[5]
local last_epoch, last_seq, last_start, last_nonce = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

local stale = false
if not epoch then
    stale = true -- Redis lost everything (or never had it)
elseif last_epoch ~= "" then
    if epoch == last_epoch then
        -- the same epoch, but behind what this publisher already published: a rollback
        stale = seq < last_seq or (seq == last_seq and nonce ~= last_nonce)
    else
        -- another epoch: newer ones were started by someone else (keep them), older ones came back from disk
        stale = start < last_start
    end
end

local full = ARGV[10] == "1"
if (stale or retired) and not full then
    return {"reseed"}
end
if stale then
    local now = redis.call("TIME")
    epoch, seq, nonce = ARGV[6], 0, ""
    start = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call("DEL", quotes, events)
    redis.call("HSET", meta, "e", epoch, "t", start, "s", 0, "n", "", "c", 0)
end
if retired then
    redis.call("HDEL", meta, "r")
end

local maxlen = ARGV[8]
if ARGV[9] == "e" then
    local counter = redis.call("HINCRBY", meta, "c", 1)
    local id = redis.call("XADD", events, "MAXLEN", maxlen, seq .. "-*",
        "_e", epoch, "_c", counter, "_k", ARGV[11], "_d", ARGV[12])
    if ARGV[11] == "market_status" then
        redis.call("HSET", meta, "st", ARGV[12])
    end
    return {"ok", epoch, seq, start, id, nonce}
end

if #ARGV < 13 then
    -- a reseed with nothing to seed: the epoch exists, numbering starts with the next batch
    return {"ok", epoch, seq, start, "", nonce}
end
seq = seq + 1
local id = seq .. "-0"
-- The quotes travel as two fields, symbols and quotes each joined by newlines (JSON has no raw newline):
-- an edge splits them in two calls instead of parsing two reply strings per quote.
local symbols, values, pairs_ = {}, {}, {}
for i = 13, #ARGV, 2 do
    symbols[#symbols + 1] = ARGV[i]
    values[#values + 1] = ARGV[i + 1]
    pairs_[#pairs_ + 1] = ARGV[i]
    pairs_[#pairs_ + 1] = ARGV[i + 1]
end
redis.call("XADD", quotes, "MAXLEN", maxlen, id, "_e", epoch, "_p", nonce, "_n", ARGV[7], "_t", ARGV[11],
    "_m", ARGV[12], "_s", table.concat(symbols, "\n"), "_q", table.concat(values, "\n"))
redis.call("HSET", latest, unpack(pairs_))
redis.call("HSET", meta, "s", seq, "n", ARGV[7])
return {"ok", epoch, seq, start, id, ARGV[7]}
