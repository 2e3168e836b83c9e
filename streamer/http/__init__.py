"""The HTTP API: JSON endpoints, Prometheus metrics and a Server-Sent Events stream (docs/http-api.md)."""

from .api import HttpApi

__all__ = ["HttpApi"]
