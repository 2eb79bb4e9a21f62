"""The server: listeners, the sessions they accept, shared pools, limits, reload, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import ssl
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import backends
from ..auth.authenticator import Authenticator
from ..auth.base import AuthUnavailable, UserDatabase
from ..auth.oauth2 import TokenVerifier
from ..auth.sasl import MECHANISMS
from ..auth.sasl.base import Exchange
from ..auth.sasl.offer import choose
from ..config import Config, ConfigError
from ..ingress.delivery import Deliverer
from ..ingress.lmtp import start_lmtp
from ..protocol.connection import SaslOffer, SessionPolicy, State
from ..protocol.replies import RespCode, err
from ..store.base import MailSink, Mailstore
from ..tls import server_context, trim_asyncio_tls_buffers
from . import proxy
from .deadlines import Deadlines
from .listeners import Listeners, bind
from .metrics import Metrics
from .net import address_in, format_address
from .penalty import LoginPenalty
from .session import Pop3Session

log = logging.getLogger("pop3d.server")

# How often the user database is looked at for a change of the mechanisms it allows.
USERS_CHECKED_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class Refusal:
    reply: bytes
    reason: str


class Pop3Server:
    """Serve POP3 as `config` says. Use `start()` then `serve_forever()`, or `async with`.

    `users` and `store` replace the passwd-file and the Maildir store the config names
    (for embedding and tests); `tls_context`, one made from the config's files before root
    was given up.
    """

    def __init__(
        self,
        config: Config,
        *,
        users: UserDatabase | None = None,
        store: Mailstore | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self._io_pool = ThreadPoolExecutor(config.server.io_threads, "pop3d-io")
        self.auth_pool = ThreadPoolExecutor(config.auth.hash_threads, "pop3d-auth")
        self._custom_users = users is not None
        self._custom_store = store is not None
        self.db = backends.database(config)
        self.users: UserDatabase = users or backends.user_database(config, self.db)
        self.tokens = TokenVerifier(config.oauth2) if config.oauth2 else None
        self.authenticator = Authenticator(self.users, self.auth_pool, self.tokens)
        self.store: Mailstore
        self.sink: MailSink | None = None  # where LMTP delivers: the configured store
        if store is None:
            self.store = self.sink = backends.mail_store(config, self.db, self._io_pool)
        else:
            self.store = store
        self.tls_context: ssl.SSLContext | None = tls_context or _tls_context(config)
        self.penalty = LoginPenalty(config.auth)
        self.line_penalty = LoginPenalty(config.auth)  # for addresses that sent endless lines
        self.sessions: set[Pop3Session] = set()
        self._per_ip: Counter[str] = Counter()
        self.handshakes = 0
        self._servers: list[asyncio.Server] = []
        self._lmtp: list[asyncio.Server] = []
        self._listeners = Listeners()
        self._accepting: list[asyncio.Task[None]] = []
        self._handshaking: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Event | None = None
        self._empty: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: Deadlines | None = None
        self._hostname = socket.gethostname()
        # Sessions without an APOP challenge share their policy: (implicit TLS, cleartext ok).
        self._policies: dict[tuple[bool, bool], SessionPolicy] = {}
        self._census_readable = True
        self.mechanisms = choose(config.auth.mechanisms, None)
        self._watcher: asyncio.Task[None] | None = None

    # ---- life cycle ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "server not started"
        return self._loop

    @property
    def deadlines(self) -> Deadlines:
        assert self._deadlines is not None, "server not started"
        return self._deadlines

    async def start(self, listeners: Listeners | None = None) -> None:
        """Serve on `listeners` (bound beforehand, as workers do), or bind the config's."""
        self._loop = asyncio.get_running_loop()
        self._deadlines = Deadlines(self._loop)
        trim_asyncio_tls_buffers()
        self._stopping = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        if self.db is not None:
            await self.db.open()
        await self._read_census(starting=True)
        self._watcher = self.loop.create_task(self._watch_users())
        self._listeners = listeners or bind(self.config)
        for sock in self._listeners.plain:
            self._servers.append(
                await self.loop.create_server(
                    lambda: Pop3Session(self, implicit_tls=False), sock=sock
                )
            )
        # Implicit TLS accepts by hand so that each handshake can be counted and timed
        # before a session exists, and the TLS layer owns the socket from its first byte.
        for sock in self._listeners.tls:
            self._accepting.append(self.loop.create_task(self._accept_tls(sock)))
        if self._listeners.lmtp:
            if self.sink is None:
                raise ValueError("[lmtp] delivers into the configured store, not a given one")
            self._lmtp = await start_lmtp(
                self._listeners.lmtp, self.deliverer, self.config, self._io_pool, self.metrics
            )

    async def _watch_users(self) -> None:
        while True:
            await asyncio.sleep(USERS_CHECKED_EVERY)
            try:
                await self._read_census()
            except Exception:  # the watch goes on: the next look may work
                log.exception("looking at the user database failed")

    async def _read_census(self, *, starting: bool = False) -> None:
        """Look at the user database (re-read when it changed): offer the SASL mechanisms
        it allows, and log what changed."""
        try:
            census = await self.loop.run_in_executor(self.auth_pool, self.users.census)
        except AuthUnavailable as exc:
            if self._census_readable:
                log.error("cannot read the user database: %s", exc)
            self._census_readable = False
            census = None
        else:
            self._census_readable = True
        offer = choose(self.config.auth.mechanisms, census, oauth2=self.tokens is not None)
        if offer != self.mechanisms or starting:
            log.info("%s", offer.describe())
            self.mechanisms = offer
            self._policies = {}

    async def _accept_tls(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, peer = await self.loop.sock_accept(listener)
            except OSError as exc:
                log.warning("accept on the TLS listener failed: %s", exc)
                await asyncio.sleep(0.1)  # out of file descriptors, say: do not spin
                continue
            task = self.loop.create_task(self._tls_handshake(conn, peer))
            self._handshaking.add(task)
            task.add_done_callback(self._handshaking.discard)

    async def _tls_handshake(self, conn: socket.socket, peer: Any) -> None:
        limits, context = self.config.limits, self.tls_context
        proxied = None
        if self.behind_proxy(peer[0]):
            try:  # before the handshake: a proxy in TCP mode sends it ahead of the ClientHello
                proxied = await asyncio.wait_for(
                    self._proxy_header(conn), limits.proxy_header_timeout
                )
            except (proxy.ProxyHeaderError, TimeoutError, OSError) as exc:
                why = str(exc) or "no PROXY header"
                log.warning("peer=%s refused: %s", format_address(peer[0], peer[1]), why)
                conn.close()
                return
        if context is None or self.handshakes >= limits.max_tls_handshakes:
            log.warning(
                "peer=%s refused: too many TLS handshakes in progress",
                format_address(peer[0], peer[1]),
            )
            conn.close()
            return
        self.handshakes += 1
        try:
            await self.loop.connect_accepted_socket(
                lambda: Pop3Session(self, implicit_tls=True, proxied=proxied),
                conn,
                ssl=context,
                ssl_handshake_timeout=limits.tls_handshake_timeout,
            )
        except (OSError, ConnectionError) as exc:
            self.metrics.tls_handshake_failures.inc()
            log.info(
                "peer=%s TLS handshake failed: %s",
                format_address(peer[0], peer[1]),
                exc or type(exc).__name__,
            )
            conn.close()
        finally:
            self.handshakes -= 1

    async def _proxy_header(self, conn: socket.socket) -> proxy.Proxied:
        """Read a PROXY header off `conn`, and not an octet more (the TLS layer takes the
        socket next): what is peeked is taken only as far as the header goes."""
        taken = b""
        while True:
            await self._readable(conn)
            peeked = conn.recv(proxy.V2_MAX, socket.MSG_PEEK)
            if not peeked:
                raise proxy.ProxyHeaderError("closed before its PROXY header")
            length = proxy.header_length(taken + peeked)
            if length is not None:
                taken += conn.recv(length - len(taken))
                return proxy.parse(taken)
            taken += conn.recv(len(peeked))  # all of it belongs to the header

    async def _readable(self, conn: socket.socket) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_reader(conn.fileno(), wake)
        try:
            await ready
        finally:
            self.loop.remove_reader(conn.fileno())

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the server listens, ports resolved (useful after listening on port 0):
        the plain listeners first, then the implicit-TLS ones."""
        socks = [*self._listeners.plain, *self._listeners.tls]
        return [sock.getsockname()[:2] for sock in socks]

    @property
    def port(self) -> int:
        """The first plain listener's port."""
        return self.addresses[0][1]

    @property
    def tls_port(self) -> int:
        """The first implicit-TLS listener's port."""
        return self.addresses[len(self.config.server.listen)][1]

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
        for server in [*self._servers, *self._lmtp]:
            server.close()
        for task in [*self._accepting, *self._handshaking]:
            task.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        self._listeners.close()
        self._servers.clear()
        self._lmtp.clear()
        self._accepting.clear()
        for session in list(self.sessions):
            if session.state is not State.TRANSACTION and not session.busy:
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
        if self.tokens is not None:
            await self.tokens.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.db is not None:
            await self.db.close()
        self._io_pool.shutdown(wait=False, cancel_futures=True)
        self.auth_pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Pop3Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reload(self, config: Config) -> None:
        """Apply a new config to sessions that start from now on (SIGHUP).

        The certificate, users, Maildir path, limits and auth policy change; listeners and
        thread counts need a restart. Everything is built before anything is swapped, so a
        failure leaves the running configuration untouched.
        """
        tls_context = _tls_context(config)
        if (config.store, config.auth.backend, config.postgresql) != (
            self.config.store, self.config.auth.backend, self.config.postgresql
        ):  # fmt: skip
            raise ConfigError("[store], [auth] backend and [postgresql] change at the next start")
        users, store, sink = self.users, self.store, self.sink
        if not self._custom_users and config.auth.passwd_file != self.config.auth.passwd_file:
            users = backends.user_database(config, self.db)
        if not self._custom_store and config.maildir != self.config.maildir:
            store = sink = backends.mail_store(config, self.db, self._io_pool)
        if (config.server.listen, config.server.listen_tls) != (
            self.config.server.listen,
            self.config.server.listen_tls,
        ):
            log.warning("reload: listener changes take effect at the next start")
        tokens = TokenVerifier(config.oauth2) if config.oauth2 else None  # secret re-read
        if self.tokens is not None:
            self.spawn(self.tokens.close(after=self.tokens.config.timeout))  # for those in use
        self.tls_context, self.users, self.tokens = tls_context, users, tokens
        self.store, self.sink = store, sink
        self.authenticator = Authenticator(users, self.auth_pool, tokens)
        self.penalty.settings = self.line_penalty.settings = config.auth
        self.config = config
        self._policies = {}
        self.spawn(self._read_census())  # what the new users and mechanisms allow
        log.info("configuration reloaded")

    # ---- what sessions ask of the server -----------------------------------------------

    def admit(self, session: Pop3Session) -> Refusal | None:
        limits = self.config.limits
        if len(self.sessions) >= limits.max_connections:
            return Refusal(
                err("Too many connections, try later.", RespCode.SYS_TEMP), "server full"
            )
        per_ip = limits.max_connections_per_ip
        if per_ip and self._per_ip[session.peer_ip] >= per_ip:
            reply = err("Too many connections from your address.", RespCode.SYS_TEMP)
            return Refusal(reply, "too many connections from this address")
        self.sessions.add(session)
        self._per_ip[session.peer_ip] += 1
        assert self._empty is not None
        self._empty.clear()
        return None

    def release(self, session: Pop3Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self._per_ip[session.peer_ip] -= 1
        if self._per_ip[session.peer_ip] <= 0:
            del self._per_ip[session.peer_ip]
        if not self.sessions and self._empty is not None:
            self._empty.set()

    def tick(self) -> None:
        """Once a second, from the worker: what is measured rather than counted."""
        self.metrics.penalized_addresses.set(self.penalty.active())

    def who(self) -> list[dict[str, Any]]:
        """The sessions, for `pop3d who`."""
        return [s.describe() for s in self.sessions]

    def kick(self, user: str) -> int:
        """End `user`'s sessions as a dropped connection would (nothing is deleted)."""
        kicked = [s for s in self.sessions if s.principal is not None and s.principal.name == user]
        for session in kicked:
            session.kick()
        if kicked:
            log.info("kicked %d sessions of %s", len(kicked), user)
        return len(kicked)

    def deliverer(self) -> Deliverer:
        """For LMTP: built per call, so a reload's users, quotas and paths apply at once."""
        assert self.sink is not None
        return Deliverer(self.config, self.users, self.sink)

    @property
    def lmtp_addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self._listeners.lmtp]

    def mechanism(self, name: str) -> type[Exchange]:
        return MECHANISMS[name]

    def behind_proxy(self, address: str) -> bool:
        """Whether a connection from `address` must begin with a PROXY header."""
        networks = self.config.server.proxy_networks
        return bool(networks) and address_in(address, networks)

    def policy_for(self, session: Pop3Session) -> SessionPolicy:
        config = self.config
        cleartext = address_in(session.peer_ip, config.auth.cleartext_networks)
        if config.auth.apop:
            challenge = f"<{os.getpid()}.{secrets.token_hex(8)}@{self._hostname}>"
            return self._policy(session.secure_from_start, cleartext, challenge)
        key = (session.secure_from_start, cleartext)
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies[key] = self._policy(*key, None)
        return policy

    def _policy(self, secure: bool, cleartext: bool, apop: str | None) -> SessionPolicy:
        config = self.config
        return SessionPolicy(
            greeting=config.server.greeting,
            implementation=config.server.implementation,
            apop_challenge=apop,
            secure=secure,
            stls_available=self.tls_context is not None,
            cleartext_network=cleartext,
            sasl=tuple(SaslOffer(n, MECHANISMS[n].plaintext) for n in self.mechanisms.offered),
            max_line=config.limits.max_line_length,
            max_sasl_line=config.limits.max_sasl_line_length,
            max_bad_commands_authorization=config.limits.max_bad_commands_authorization,
            max_bad_commands_transaction=config.limits.max_bad_commands_transaction,
            max_auth_failures=config.auth.max_auth_failures,
        )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a short background job that the server waits for at shutdown."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls.cert is None or config.tls.key is None:
        return None
    return server_context(config.tls.cert, config.tls.key)
