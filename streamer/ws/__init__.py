"""WebSocket transport of the streaming core; the protocol is in docs/websocket-api.md."""

from streamer.stream.messages import PROTOCOL_VERSION
from streamer.stream.protocol import ErrorCode

from .server import WebSocketServer

__all__ = ["PROTOCOL_VERSION", "ErrorCode", "WebSocketServer"]
