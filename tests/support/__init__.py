"""The tests' shared toolkit: waiting under a deadline (`waiting`), quotes and batches (`quotes`), provider and
component doubles (`doubles`), the real servers' read side (`storage`), harnesses for the HTTP API (`http`), the
WebSocket server (`ws`) and the daemon as a process (`daemon`), and clients (`sse_client`, `pb_realtime`)."""
