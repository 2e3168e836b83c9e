"""stock-streamer: real-time WSE quotes into QuestDB, PocketBase and WebSocket clients."""

__version__ = "0.1.0"
