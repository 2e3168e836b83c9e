-- An edge found that Redis went back within an epoch (it holds a seq the edge saw with other content, or
-- fewer): that epoch can no longer be trusted, since one seq would have two contents. Retire it: a fresh
-- epoch at seq 0, flagged so the publisher's next call reseeds it with every latest quote. Only the epoch
-- the edge names is retired, so edges that notice together retire it once.
--
-- KEYS: meta, quotes, events (as in publish.lua)
-- ARGV: 1 the epoch to retire, 2 a fresh epoch name
-- Returns 1 when retired, 0 when Redis had already moved to another epoch.

local meta, quotes, events = KEYS[1], KEYS[2], KEYS[3]
if redis.call("HGET", meta, "e") ~= ARGV[1] then
    return 0
end
local now = redis.call("TIME")
local start = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call("DEL", quotes, events)
redis.call("HSET", meta, "e", ARGV[2], "t", start, "s", 0, "n", "", "c", 0, "r", 1)
return 1
