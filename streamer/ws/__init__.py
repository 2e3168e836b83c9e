"""WebSocket broadcast of quotes, market status and alerts; the protocol is in docs/websocket-api.md."""

from .protocol import PROTOCOL_VERSION, ErrorCode
from .server import WebSocketServer

__all__ = ["PROTOCOL_VERSION", "ErrorCode", "WebSocketServer"]
