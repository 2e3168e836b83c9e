"""The transport-neutral streaming core: numbered batches in an epoch, the history kept for resume, and the
client session state machine that WebSocket and SSE adapt to their wire."""
