"""The Upstox Market Data Feed V3 (NSE/BSE): a push provider over WebSocket and protobuf, and a loopback server."""
