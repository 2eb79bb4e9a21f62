"""The asyncio adapter: listeners, sessions, flow control, timers, graceful stop."""

from .server import Pop3Server

__all__ = ["Pop3Server"]
