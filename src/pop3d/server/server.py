"""The server: listeners, the sessions they accept, shared pools, limits and a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..auth.authenticator import Authenticator
from ..auth.base import UserDatabase
from ..auth.passwd_file import PasswdFile
from ..config import Address, Config
from ..protocol.connection import Connection, SessionPolicy, State
from ..protocol.events import SaslResponse, SaslStart
from ..store.base import Mailstore
from ..store.maildir import MaildirStore
from .session import Pop3Session

log = logging.getLogger("pop3d.server")


@dataclass(frozen=True, slots=True)
class Refusal:
    reply: bytes
    reason: str


class Pop3Server:
    """Serve POP3 as `config` says. Use `start()` then `serve_forever()`, or `async with`.

    `users` and `store` replace the passwd-file and the Maildir store the config names
    (for embedding and tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        users: UserDatabase | None = None,
        store: Mailstore | None = None,
    ) -> None:
        self.config = config
        self._io_pool = ThreadPoolExecutor(config.server.io_threads, "pop3d-io")
        self._auth_pool = ThreadPoolExecutor(config.auth.hash_threads, "pop3d-auth")
        self.users: UserDatabase = users or PasswdFile(config.passwd_file)
        self.authenticator = Authenticator(self.users, self._auth_pool)
        self.store: Mailstore = store or MaildirStore(config.maildir_template, self._io_pool)
        self.sessions: set[Pop3Session] = set()
        self._servers: list[asyncio.Server] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Event | None = None
        self._empty: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hostname = socket.gethostname()

    # ---- life cycle ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "server not started"
        return self._loop

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        for address in self.config.server.listen:
            await self._listen(address, implicit_tls=False)

    async def _listen(self, address: Address, *, implicit_tls: bool) -> None:
        server = await self.loop.create_server(
            lambda: Pop3Session(self, implicit_tls=implicit_tls),
            address.host,
            address.port,
            reuse_address=True,
            backlog=1024,
        )
        self._servers.append(server)
        for sock in server.sockets:
            log.info("listening on %s", _format(sock.getsockname()))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the server listens, ports resolved (useful after listening on port 0)."""
        return [sock.getsockname()[:2] for s in self._servers for sock in s.sockets]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    async def serve_forever(self) -> None:
        assert self._stopping is not None, "call start() first"
        await self._stopping.wait()
        await self.stop()

    def request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def stop(self) -> None:
        """Stop accepting; give sessions `shutdown_timeout` to finish; cut off the rest.

        A session cut off here never reaches UPDATE, so it deletes nothing.
        """
        for server in self._servers:
            server.close()
        self._servers.clear()
        for session in list(self.sessions):
            if session.state is State.AUTHORIZATION and not session.busy:
                session.abort_for_shutdown()
        assert self._empty is not None
        try:
            await asyncio.wait_for(self._empty.wait(), self.config.server.shutdown_timeout)
        except TimeoutError:
            log.info("cutting off %d sessions at shutdown", len(self.sessions))
            for session in list(self.sessions):
                session.abort_for_shutdown()
            try:
                await asyncio.wait_for(self._empty.wait(), 2.0)
            except TimeoutError:
                log.warning("%d sessions did not close", len(self.sessions))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._io_pool.shutdown(wait=False, cancel_futures=True)
        self._auth_pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Pop3Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- what sessions ask of the server -----------------------------------------------

    def admit(self, session: Pop3Session) -> Refusal | None:
        self.sessions.add(session)
        assert self._empty is not None
        self._empty.clear()
        return None

    def release(self, session: Pop3Session) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._empty is not None:
            self._empty.set()

    def policy_for(self, session: Pop3Session) -> SessionPolicy:
        config = self.config
        apop = None
        if config.auth.apop:
            apop = f"<{os.getpid()}.{secrets.token_hex(8)}@{self._hostname}>"
        return SessionPolicy(
            greeting=config.server.greeting,
            implementation=config.server.implementation,
            apop_challenge=apop,
            secure=session.implicit_tls,
            max_line=config.limits.max_line_length,
            max_bad_commands_authorization=config.limits.max_bad_commands_authorization,
            max_bad_commands_transaction=config.limits.max_bad_commands_transaction,
        )

    async def failed_login_delay(self, session: Pop3Session) -> None:
        return None

    async def sasl_step(
        self, session: Pop3Session, core: Connection, event: SaslStart | SaslResponse
    ) -> None:
        raise AssertionError("no SASL mechanism is offered")

    async def start_tls(self, session: Pop3Session, core: Connection) -> None:
        raise AssertionError("STLS is not offered")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a short background job that the server waits for at shutdown."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _format(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
