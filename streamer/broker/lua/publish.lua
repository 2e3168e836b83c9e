-- One atomic publish: a batch of quotes (kind "q") or an event (kind "e": market status, alert).
-- Fencing: only the current holder of the lease key may publish. Numbering: a batch takes the next seq of
-- the epoch and is appended to the capped quotes stream under the entry id "<seq>-0"; an event is appended
-- to the events stream under "<seq>-<n>" (after batch <seq>, before batch <seq>+1), with its own counter.
-- Rollback: the caller passes the position it last published; a Redis that has no epoch, or one older than
-- that position (restarted empty, from an older RDB snapshot, a promoted async replica), must not number
-- again from where it stands: the caller is told to reseed, and its full batch (every latest quote it
-- holds) starts a new epoch at seq 1. An epoch retired by an edge (retire.lua) is reseeded the same way.
-- Doubt: a call whose answer the caller never got may have numbered a batch that edges read and that Redis
-- then lost (the master died before its replica had it; a restart from a snapshot). When the caller says so
-- and the server's history is not the one of its last confirmed publish (another server, or a restart: the
-- run id or replication id differs), the next seq could be taken twice: that too asks for a reseed.
--
-- KEYS: meta (hash: e epoch, t epoch start ms, s seq, n nonce of entry s, c event counter, r retired,
--       st latest market status), quotes (stream), events (stream), latest (hash symbol -> quote), lease
-- ARGV: 1 lease token, 2 last epoch ("" = none), 3 last seq, 4 last epoch start ms, 5 last nonce,
--       6 a fresh epoch name, 7 this entry's nonce, 8 MAXLEN, 9 kind "q" | "e",
--       10 "1" when the batch holds every latest quote of the caller (allowed to start an epoch),
--       11 the server history of the caller's last confirmed publish ("" = none), 12 "1" when a call since
--       then may have been applied unseen,
--       q: 13 timestamp, 14 market status ("" = none), 15.. symbol, quote, symbol, quote ...
--       e: 13 event kind, 14 event JSON
-- Returns {"fenced"} | {"reseed"} | {"ok", epoch, seq, epoch start ms, entry id, nonce of entry seq, history}

local meta, quotes, events, latest, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

if redis.call("GET", lease) ~= ARGV[1] then
    return {"fenced"}
end

local m = redis.call("HMGET", meta, "e", "s", "t", "n", "r")
local epoch, seq, start, nonce, retired = m[1], tonumber(m[2] or "0"), tonumber(m[3] or "0"), m[4] or "", m[5]
local last_epoch, last_seq, last_start, last_nonce = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

-- This server's history: its run id (a restart changes it) and replication id (a promotion changes it).
local run_id = string.match(redis.call("INFO", "server"), "run_id:(%x+)")
local replid = string.match(redis.call("INFO", "replication"), "master_replid:(%x+)")
if not run_id or not replid then
    return redis.error_reply("publish.lua: INFO names no run_id or master_replid")
end
local history = run_id .. ":" .. replid
local doubt = ARGV[12] == "1" and history ~= ARGV[11]

local stale = false
if not epoch then
    stale = true -- Redis lost everything (or never had it)
elseif last_epoch ~= "" then
    if epoch == last_epoch then
        -- the same epoch, but behind what this publisher already published (a rollback), or maybe behind
        -- what it published unseen on a server that is gone
        stale = seq < last_seq or (seq == last_seq and nonce ~= last_nonce) or doubt
    else
        -- another epoch: newer ones were started by someone else (keep them), older ones came back from disk
        stale = start < last_start
    end
else
    stale = doubt -- never confirmed a publish, yet one may have numbered a batch on a server that is gone
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
        "_e", epoch, "_c", counter, "_k", ARGV[13], "_d", ARGV[14])
    if ARGV[13] == "market_status" then
        redis.call("HSET", meta, "st", ARGV[14])
    end
    return {"ok", epoch, seq, start, id, nonce, history}
end

if #ARGV < 15 then
    -- a reseed with nothing to seed: the epoch exists, numbering starts with the next batch
    return {"ok", epoch, seq, start, "", nonce, history}
end
seq = seq + 1
local id = seq .. "-0"
-- The quotes travel as two fields, symbols and quotes each joined by newlines (JSON has no raw newline):
-- an edge splits them in two calls instead of parsing two reply strings per quote.
local symbols, values, pairs_ = {}, {}, {}
for i = 15, #ARGV, 2 do
    symbols[#symbols + 1] = ARGV[i]
    values[#values + 1] = ARGV[i + 1]
    pairs_[#pairs_ + 1] = ARGV[i]
    pairs_[#pairs_ + 1] = ARGV[i + 1]
end
-- _w: when Redis took the batch (ms, its clock): an edge's lag behind the head in seconds is measured from it.
local now = redis.call("TIME")
local written = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call("XADD", quotes, "MAXLEN", maxlen, id, "_e", epoch, "_p", nonce, "_n", ARGV[7], "_t", ARGV[13],
    "_m", ARGV[14], "_w", written, "_s", table.concat(symbols, "\n"), "_q", table.concat(values, "\n"))
redis.call("HSET", latest, unpack(pairs_))
redis.call("HSET", meta, "s", seq, "n", ARGV[7])
return {"ok", epoch, seq, start, id, ARGV[7], history}
