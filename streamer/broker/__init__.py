"""The Redis broker of the scale-out roles (docs/scaling.md): the ingest publishes numbered batches and events
through Lua scripts, under a lease; edges load the stream once and tail it.

Modules: `layout` (keys and entry fields), `scripts` (the Lua scripts, typed), `connection` (the client from
the configuration), `lease` (the leader's lease), `publisher` (ingest side), `subscriber` (edge side), and the
components the roles run: `ingest` (the bus to Redis) and `edge` (Redis to the streaming core)."""
