"""A worker: one Pop3Server on the supervisor's listening sockets, and its side of the
channel to the supervisor (see `control`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, load_config
from ..server import Pop3Server
from ..server.listeners import Listeners
from . import control

log = logging.getLogger("pop3d")

HEARTBEAT = 1.0  # seconds between the worker's reports of its sessions


def serve(
    config: Config,
    config_path: Path,
    listeners: Listeners,
    channel: socket.socket,
    tls_context: ssl.SSLContext | None,
) -> int:
    """Run a worker until SIGTERM; its exit status. `tls_context` was made before root was
    given up: the key may be one only root can read (a reload reads it as the worker)."""
    asyncio.run(_serve(config, config_path, listeners, channel, tls_context))
    return 0


async def _serve(
    config: Config,
    config_path: Path,
    listeners: Listeners,
    channel: socket.socket,
    tls_context: ssl.SSLContext | None,
) -> None:
    server = Pop3Server(config, tls_context=tls_context)
    await server.start(listeners)
    link = SupervisorLink(server, channel)
    await link.connect()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)

    def reload() -> None:
        try:
            server.reload(load_config(config_path))
        except (ConfigError, OSError, ssl.SSLError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
        link.tell(reloaded=True)

    loop.add_signal_handler(signal.SIGHUP, reload)
    link.tell(ready=True)
    try:
        await server.serve_forever()
    finally:
        link.close()


class SupervisorLink:
    """Answers the supervisor's requests, and reports the sessions once a second."""

    def __init__(self, server: Pop3Server, channel: socket.socket) -> None:
        self._server = server
        self._channel = channel
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self._channel)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._requests(reader)),
            loop.create_task(self._heartbeat()),
        ]

    def tell(self, **message: Any) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(control.encode(message))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            self._writer.close()

    async def _heartbeat(self) -> None:
        while True:
            self._server.tick()
            self.tell(sessions=len(self._server.sessions))
            await asyncio.sleep(HEARTBEAT)

    async def _requests(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            request = control.decode(line)
            if request is None or "id" not in request:
                continue
            answer: dict[str, Any] = {"reply": request["id"]}
            match request.get("op"):
                case "who":
                    answer["sessions"] = self._server.who()
                case "kick":
                    answer["kicked"] = self._server.kick(str(request.get("user")))
            self.tell(**answer)
        # The supervisor is gone (it would have killed us first): nothing to serve for.
        with contextlib.suppress(RuntimeError):
            self._server.request_stop()
