"""One POP3 connection: an asyncio.Protocol that pumps bytes through the sans-IO core.

Commands that need no I/O are answered synchronously inside `data_received`; a session only
owns a task while it performs an event (a login, a maildrop scan, a message stream, an
expunge, a TLS handshake), so an idle session costs a few objects and no coroutine.

Flow control: while the transport's write buffer is above its high-water mark no further
command is taken (and message streaming waits for drain); while a command is pending or output
is backed up and the client keeps pipelining, reading stops once the queued input passes
`MAX_QUEUED_INPUT`.

TLS, implicit or by STLS, is one path: `loop.start_tls` on the plain transport. For STLS the
core has already dropped whatever the client pipelined after the command, and reading is paused
before the +OK goes out, so the only bytes the handshake sees are the ones that came after it.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from ..auth.base import AuthUnavailable
from ..auth.sasl.base import Challenge, Exchange, Failure, Success
from ..logs import event
from ..principal import Principal
from ..protocol.connection import Connection, SessionStats, State
from ..protocol.events import (
    ApopCredentials,
    AuthFailure,
    Close,
    CloseReason,
    Credentials,
    Event,
    Expunge,
    Login,
    MessageFailure,
    OpenMaildrop,
    SaslResponse,
    SaslStart,
    SendMessage,
    StartTls,
    StoreFailure,
)
from ..protocol.maildrop import MessageInfo
from ..store.base import (
    Maildrop,
    MaildropLocked,
    MessageGone,
    StoreError,
    StorePermanentError,
)
from . import proxy
from .net import format_address
from .proxy import Proxied

if TYPE_CHECKING:
    from .server import Pop3Server

log = logging.getLogger("pop3d.session")

MAX_QUEUED_INPUT = 64 * 1024
WRITE_SIZE = 64 * 1024
WRITE_BUFFER = 1024 * 1024
_ids = itertools.count(1)


class Pop3Session(asyncio.Protocol):
    # Slots: at 20,000 idle sessions, a dict per session is memory for nothing.
    __slots__ = (
        "_admitted",
        "_closed",
        "_connected_at",
        "_core",
        "_drained",
        "_exchange",
        "_finished",
        "_held",
        "_last_activity",
        "_logged_in",
        "_login_started",
        "_loop",
        "_maildrop",
        "_proxied",
        "_proxy_header",
        "_proxy_timer",
        "_reading_paused",
        "_task",
        "_timer_second",
        "_tls",
        "_transport",
        "_waiting_event",
        "_write_paused",
        "bytes_in",
        "bytes_out",
        "close_detail",
        "close_reason",
        "id",
        "implicit_tls",
        "mechanism",
        "peer",
        "peer_ip",
        "principal",
        "secure_from_start",
        "server",
    )

    def __init__(
        self, server: Pop3Server, *, implicit_tls: bool, proxied: Proxied | None = None
    ) -> None:
        """`proxied`: the client a PROXY header named, read before the TLS handshake."""
        self.server = server
        self.implicit_tls = implicit_tls
        self.secure_from_start = implicit_tls
        self.id = next(_ids)
        self.peer = "?"
        self.peer_ip = ""
        self.principal: Principal | None = None
        self.mechanism = "-"  # how the last login was tried: USER, APOP or a SASL mechanism
        self.bytes_in = self.bytes_out = 0
        self.close_reason: str = "connection lost"
        self.close_detail: str | None = None
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._core: Connection | None = None
        self._maildrop: Maildrop | None = None
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting_event: Event | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._closed = False
        self._finished = False
        self._held = False  # not read from, nor greeted, until the address has waited
        self._logged_in = False  # counted in the sessions_logged_in gauge
        self._login_started = 0.0
        self._admitted = False
        self._tls = False
        self._connected_at = 0.0
        self._last_activity = 0.0
        self._timer_second = 0  # where the session is filed in the server's deadlines
        self._proxied = proxied
        self._proxy_header: bytearray | None = None  # collecting one from a proxy
        self._proxy_timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are transports.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_ip = str(peer[0])
            self.peer = format_address(self.peer_ip, peer[1])
        self._connected_at = self._last_activity = self._loop.time()
        if self._proxied is not None:
            self._stand_for(self._proxied)
        elif self.server.behind_proxy(self.peer_ip):
            # Nothing is said to a proxy's connection before its PROXY header names the
            # client: what the client is allowed depends on who it is.
            self._proxy_header = bytearray()
            timeout = self.server.config.limits.proxy_header_timeout
            self._proxy_timer = self._loop.call_later(timeout, self._no_proxy, "no PROXY header")
            return
        self._accept()

    def _stand_for(self, proxied: Proxied) -> None:
        """The client the proxy's header names is the peer from now on."""
        self.peer_ip = proxied.address
        self.peer = format_address(proxied.address, proxied.port)
        self.secure_from_start = self.implicit_tls or proxied.tls

    def _proxy_data(self, data: bytes) -> None:
        header = self._proxy_header
        assert header is not None
        header += data
        try:
            length = proxy.header_length(bytes(header))
            if length is None:
                return
            proxied = proxy.parse(bytes(header[:length]))
        except proxy.ProxyHeaderError as exc:
            self._no_proxy(str(exc))
            return
        rest = bytes(header[length:])
        self._proxy_header = None
        assert self._proxy_timer is not None
        self._proxy_timer.cancel()
        self._stand_for(proxied)
        self._accept()
        if rest:
            self.data_received(rest)

    def _no_proxy(self, why: str) -> None:
        if self._proxy_header is None or self._closed:
            return
        self._proxy_header = None
        self._closed = self._finished = True
        self._event(logging.WARNING, "refused:", why=why)
        assert self._transport is not None
        self._transport.close()

    def _accept(self) -> None:
        transport = self._transport
        assert transport is not None
        refusal = self.server.admit(self)
        if refusal is not None:
            self._closed = self._finished = True
            self._event(logging.INFO, "refused:", why=refusal.reason)
            transport.write(refusal.reply)
            transport.close()
            return
        self._admitted = True
        listener = self.listener
        tls = "implicit" if self.implicit_tls else "proxy" if self.secure_from_start else None
        self._event(logging.INFO, "connect", listener=listener, tls=tls)
        metrics = self.server.metrics
        metrics.connections.labels(listener, "true" if self.implicit_tls else "false").inc()
        metrics.connections_open.inc()
        self._tls = self.secure_from_start  # the handshake is done when we get here
        # Room for a few chunks of a large RETR before the stream waits for the client.
        transport.set_write_buffer_limits(high=WRITE_BUFFER)
        self._core = Connection(self.server.policy_for(self))
        # An address that sent a line without end waits (as long as for failed logins)
        # before anything from it is read again: cutting such a line off bounds what one
        # connection costs, this bounds how often it can start over.
        delay = self.server.line_penalty.current(self.peer_ip)
        if delay:
            self._event(logging.INFO, "held", seconds=f"{delay:.1f}", why="it sent endless lines")
            self._held = True
            # On the next turn of the loop: uvloop ignores a pause made in connection_made.
            # What arrives before that waits in the core.
            self._loop.call_soon(self._hold)
            self._loop.call_later(delay, self._begin)
            return
        self._begin()

    def _hold(self) -> None:
        if self._held and not self._closed:
            assert self._transport is not None
            self._transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self._proxy_header is not None:
            self._proxy_data(data)
            return
        if self._core is None or self._closed:
            return
        self._last_activity = self._loop.time()
        self.bytes_in += len(data)
        self._core.receive_data(data)
        if not self._held:
            self._pump()

    def eof_received(self) -> bool:
        if self._proxy_header is not None:
            self._no_proxy("closed before its PROXY header")
            return False
        if self._core is not None and not self._closed:
            self._core.receive_eof()
            if not self._held:
                self._pump()
        # Keep a plain transport open: replies to what came before EOF still go out. TLS has
        # no half-close, so there asyncio closes once the pending output is written.
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self.close_reason, self.close_detail = "connection lost", str(exc) if exc else None
        self._finish()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._last_activity = self._loop.time()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._task is None and self._core is not None and not self._closed and not self._held:
            self._pump()

    # ---- the session --------------------------------------------------------------------

    def _begin(self) -> None:
        if self._closed:
            return
        if self._held:
            self._held = False
            assert self._transport is not None
            self._transport.resume_reading()
            self._connected_at = self._loop.time()  # the time to log in starts now
        self._last_activity = self._loop.time()
        self._arm_timer()
        self._pump()

    def _pump(self) -> None:
        core = self._core
        assert core is not None
        while self._task is None and not self._closed and not self._write_paused:
            event = core.next_event()
            if event is None:
                break
            if isinstance(event, StartTls):
                assert self._transport is not None
                self._transport.pause_reading()  # until the handshake takes the transport
            self._flush()
            if isinstance(event, Close):
                if event.reason is CloseReason.LINE_TOO_LONG:
                    # Its next connections wait before they are read (see connection_made).
                    self.server.line_penalty.failure(self.peer_ip)
                self._close(event.reason)
                return
            if isinstance(event, SendMessage) and self._send_now(core, event):
                continue
            self._waiting_event = event
            self._task = self._loop.create_task(self._perform(event))
        self._flush()
        self._regulate_reading()

    def _flush(self) -> None:
        assert self._core is not None
        data = self._core.data_to_send()
        if data and not self._closed:
            self._write(data)

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self.bytes_out += len(data)

    def _regulate_reading(self) -> None:
        if self._closed or self._core is None or self._transport is None:
            return
        backed_up = self._core.buffered_input > MAX_QUEUED_INPUT
        if backed_up and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        elif self._reading_paused and not backed_up:
            self._reading_paused = False
            self._transport.resume_reading()

    def _close(self, reason: str, detail: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason, self.close_detail = reason, detail
        self.server.deadlines.discard(self, self._timer_second)
        assert self._transport is not None
        if self._reading_paused:
            self._transport.resume_reading()  # let the close complete
        self._transport.close()

    def _finish(self) -> None:
        """Everything that ends with the connection, whichever way it ended. Runs once."""
        if self._finished:
            return
        self._closed = self._finished = True
        self.server.deadlines.discard(self, self._timer_second)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._task is not None and not isinstance(self._waiting_event, Expunge):
            self._task.cancel()  # an expunge in flight finishes: it was QUIT-committed
        self._release_maildrop()
        if self._admitted:
            stats = self._core.stats if self._core else SessionStats()
            self._event(
                logging.INFO, "logout", user=self.principal.name if self.principal else None,
                reason=self.close_reason, detail=self.close_detail, commands=stats.commands,
                retrieved=stats.retrieved, deleted=stats.deleted, bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
            )  # fmt: skip
            metrics = self.server.metrics
            metrics.connections_open.dec()
            if self._logged_in:
                metrics.sessions_logged_in.dec()
            metrics.sessions_closed.labels(self.close_reason).inc()
            metrics.bytes_sent.inc(self.bytes_out)
            metrics.messages_retrieved.inc(stats.retrieved)
            metrics.messages_deleted.inc(stats.deleted)
            self.server.release(self)

    async def _perform(self, event: Event) -> None:
        core = self._core
        assert core is not None
        try:
            match event:
                case Login(credentials):
                    await self._login(core, credentials)
                case SaslStart() | SaslResponse():
                    await self._sasl(core, event)
                case OpenMaildrop():
                    await self._open_maildrop(core)
                case SendMessage():
                    await self._send_message(core, event)
                case Expunge(messages):
                    await self._expunge(core, messages)
                case StartTls():
                    if await self._handshake():
                        self._event(logging.INFO, "starttls")
                        core.tls_started()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session=%d peer=%s failed performing %r", self.id, self.peer, event)
            core.internal_error()
        finally:
            self._task = None
            self._waiting_event = None
        if not self._closed:
            self._pump()

    # ---- authentication -----------------------------------------------------------------

    async def _login(self, core: Connection, credentials: Credentials) -> None:
        self.mechanism = "APOP" if isinstance(credentials, ApopCredentials) else "USER"
        self._login_started = time.perf_counter()
        try:
            principal = await self.server.authenticator.login(credentials)
        except AuthUnavailable as exc:
            self._auth_unavailable(core, credentials.user, str(exc))
            return
        await self._finish_login(core, principal, credentials.user)

    def _auth_unavailable(self, core: Connection, user: str | None, why: str) -> None:
        self._count_login("failure")
        self._event(
            logging.ERROR, "auth unavailable:", user=_shown(user), rip=self.peer_ip,
            mechanism=self.mechanism, why=why,
        )  # fmt: skip
        core.auth_failed(AuthFailure.TEMPORARY)

    def _count_login(self, result: str) -> None:
        metrics = self.server.metrics
        metrics.logins.labels(result, self.mechanism).inc()
        metrics.login_duration.observe(time.perf_counter() - self._login_started)

    async def _sasl(self, core: Connection, event: SaslStart | SaslResponse) -> None:
        if isinstance(event, SaslStart):
            self.mechanism = event.mechanism
            self._login_started = time.perf_counter()
            mechanism = self.server.mechanism(event.mechanism)
            self._exchange = mechanism(self.server.authenticator)
            response = event.initial_response
        else:
            response = event.data
        exchange = self._exchange
        assert exchange is not None, "a SASL response without an exchange"
        try:
            step = await exchange.step(response)
        except AuthUnavailable as exc:
            self._exchange = None
            self._auth_unavailable(core, None, str(exc))
            return
        match step:
            case Challenge(data):
                core.sasl_challenge(data)
            case Success(principal):
                self._exchange = None
                await self._finish_login(core, principal, principal.name)
            case Failure(AuthFailure.CREDENTIALS, user, why):
                self._exchange = None
                await self._finish_login(core, None, user or "-", why)
            case Failure(AuthFailure.TEMPORARY, user, why):
                self._exchange = None
                self._auth_unavailable(core, user, why)
            case Failure(reason, user, why):
                self._exchange = None
                self._count_login("failure")
                self._event(
                    logging.INFO, "auth failed:", user=_shown(user), rip=self.peer_ip,
                    mechanism=self.mechanism, reason=reason.value, why=why or None,
                )  # fmt: skip
                core.auth_failed(reason)

    async def _finish_login(
        self, core: Connection, principal: Principal | None, user: str, why: str = ""
    ) -> None:
        if principal is None:
            self._count_login("failure")
            delay = self.server.penalty.failure(self.peer_ip)
            self._event(
                logging.INFO, "auth failed:", user=_shown(user), rip=self.peer_ip,
                mechanism=self.mechanism, reason="credentials", delay=f"{delay:.1f}s",
                why=why or None,
            )  # fmt: skip
            if delay:
                await asyncio.sleep(delay)
            core.auth_failed(AuthFailure.CREDENTIALS)
            return
        self._count_login("success")
        self.principal = principal
        core.auth_succeeded(principal.name)

    # ---- the maildrop -------------------------------------------------------------------

    async def _open_maildrop(self, core: Connection) -> None:
        assert self.principal is not None
        name = self.principal.name
        try:
            maildrop = await self.server.store.open(self.principal)
        except MaildropLocked:
            self.server.metrics.maildrop_in_use.inc()
            self._event(logging.INFO, "login refused:", user=name, why="in-use")
            core.maildrop_failed(StoreFailure.LOCKED)
            return
        except (StoreError, OSError) as exc:
            permanent = isinstance(exc, StorePermanentError)
            self._event(logging.ERROR, "maildrop failed:", user=name, why=str(exc))
            core.maildrop_failed(StoreFailure.PERMANENT if permanent else StoreFailure.TEMPORARY)
            return
        if self._closed:  # the client went away while we were scanning
            await maildrop.close()
            return
        self._maildrop = maildrop
        maildrop.on_lost(self._lock_lost)
        self._logged_in = True
        self.server.metrics.sessions_logged_in.inc()
        self._event(
            logging.INFO, "login", user=name, mechanism=self.mechanism,
            messages=len(maildrop.messages),
        )  # fmt: skip
        core.maildrop_opened(maildrop.messages)

    def _send_now(self, core: Connection, event: SendMessage) -> bool:
        """RETR of a message the store has at hand: one write, no task, no thread."""
        assert self._maildrop is not None
        data = self._maildrop.read_now(event.message)
        if data is None:
            return False
        self._write(event.encoder.whole(event.status_line, data))
        core.message_sent()
        return True

    async def _send_message(self, core: Connection, event: SendMessage) -> None:
        assert self._maildrop is not None
        try:
            reader = await self._maildrop.open_message(event.message)
        except MessageGone:
            core.message_failed(event.number, MessageFailure.GONE)
            return
        except (StoreError, OSError) as exc:
            self._event(logging.ERROR, "message failed:", number=event.number, why=str(exc))
            core.message_failed(event.number, MessageFailure.TEMPORARY)
            return
        encoder = event.encoder
        # Output is gathered into writes of WRITE_SIZE or more: a small message goes out as
        # one write (status line, body, terminator), a syscall instead of three.
        out: list[bytes | bytearray] = [event.status_line]
        pending = len(event.status_line)
        started = False  # has the +OK gone out?
        following: asyncio.Task[bytes] | None = None
        try:
            chunk = await reader.read()
            while chunk and not encoder.done:
                # The next chunk is read on the pool while this one is encoded and sent.
                following = self._loop.create_task(reader.read())
                data = encoder.feed(chunk)
                out.append(data)
                pending += len(data)
                if pending >= WRITE_SIZE:
                    self._write(b"".join(out))
                    out, pending, started = [], 0, True
                    self._last_activity = self._loop.time()
                    if self._write_paused:
                        await self._drain()
                    if self._closed:
                        return
                chunk = await following
                following = None
            out.append(encoder.finish())
            self._write(b"".join(out))
        except (StoreError, OSError) as exc:
            self._event(logging.ERROR, "message broke off:", number=event.number, why=str(exc))
            if not started:
                core.message_failed(event.number, MessageFailure.TEMPORARY)
                return
            # The +OK is out: the only honest ending left is to drop the connection.
            self._close("message read failed", str(exc))
            return
        finally:
            if following is not None:
                # Let a read in flight finish before its file is closed (its descriptor
                # could otherwise be reused under it), whatever it returns.
                await asyncio.gather(following, return_exceptions=True)
            await reader.close()
        core.message_sent()

    async def _drain(self) -> None:
        self._drained = self._loop.create_future()
        await self._drained
        self._drained = None

    async def _expunge(self, core: Connection, messages: Sequence[MessageInfo]) -> None:
        maildrop = self._maildrop
        assert maildrop is not None
        failed = 0
        if messages:
            try:
                failed = (await maildrop.expunge(messages)).failed
            except (StoreError, OSError) as exc:
                self._event(logging.ERROR, "expunge failed:", why=str(exc))
                failed = len(messages)
        if failed:
            self._event(logging.ERROR, "not deleted:", messages=failed)
        await maildrop.close()  # before the reply: see Expunge
        self._maildrop = None
        core.expunged(failed)

    def _release_maildrop(self) -> None:
        maildrop, self._maildrop = self._maildrop, None
        if maildrop is None:
            return
        if self._task is not None and isinstance(self._waiting_event, Expunge):
            # Keep the lock until the committed expunge is done.
            self._task.add_done_callback(lambda _: self.server.spawn(maildrop.close()))
        else:
            self.server.spawn(maildrop.close())

    # ---- TLS ----------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        """STLS: upgrade the transport to TLS; False (and the connection closed) on failure."""
        server = self.server
        context, limits = server.tls_context, server.config.limits
        transport = self._transport
        assert transport is not None
        if context is None or server.handshakes >= limits.max_tls_handshakes:
            self._event(logging.WARNING, "refused:", why="too many TLS handshakes")
            self.close_reason = "too many TLS handshakes"
            transport.abort()
            self._finish()
            return False
        server.handshakes += 1
        try:
            tls_transport = await self._loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=limits.tls_handshake_timeout,
            )
        except (OSError, ConnectionError) as exc:
            server.metrics.tls_handshake_failures.inc()
            self._event(logging.INFO, "TLS handshake failed:", why=str(exc) or type(exc).__name__)
            self.close_reason = "TLS handshake failed"
            transport.abort()
            self._finish()
            return False
        finally:
            server.handshakes -= 1
        if tls_transport is None or self._closed:
            self._finish()
            return False
        self._transport = tls_transport
        self._tls = True
        self._reading_paused = False
        return True

    # ---- timers and shutdown ------------------------------------------------------------

    def _deadline(self) -> float:
        limits = self.server.config.limits
        if self._core is not None and self._core.state is State.TRANSACTION:
            return self._last_activity + limits.idle_timeout_transaction
        return min(
            self._last_activity + limits.idle_timeout_authorization,
            self._connected_at + limits.login_timeout,
        )

    def _arm_timer(self) -> None:
        # Filed once, and again only when it comes up: activity just records the time.
        self._timer_second = self.server.deadlines.add(self, self._deadline())

    def expire(self) -> None:
        """The deadline this session was filed under has come: end it, or file it again."""
        if self._closed or self._core is None:
            return
        if (
            self._task is not None
            and not self._write_paused
            and self._core.state is State.TRANSACTION
        ):
            self._last_activity = self._loop.time()  # working for the client, not waiting on it
        now = self._loop.time()
        if now < self._deadline():
            self._arm_timer()
            return
        login_deadline = self._connected_at + self.server.config.limits.login_timeout
        if self._core.state is not State.TRANSACTION and now >= login_deadline:
            self.abort(self._core.login_timed_out)
        else:
            self.abort(self._core.timed_out)

    def abort(self, tell_core: Callable[[], None]) -> None:
        """End the session now, after the core has queued its parting -ERR."""
        if self._closed or self._core is None:
            return
        if self._task is not None and not isinstance(self._waiting_event, Expunge):
            self._task.cancel()
            self._task = None
        tell_core()
        self._pump()
        if not self._closed:
            self._close("aborted")

    def abort_for_shutdown(self) -> None:
        if self._core is not None:
            self.abort(self._core.shutting_down)

    def _lock_lost(self) -> None:
        if self._core is not None:
            self.abort(self._core.lock_lost)

    def kick(self) -> None:
        """`pop3d kick`: end the session; its DELE marks are dropped as a lost link's are."""
        if self._core is not None:
            self.abort(self._core.kicked)

    def describe(self) -> dict[str, object]:
        """What `pop3d who` shows of this session."""
        since = time.time() - (self._loop.time() - self._connected_at)
        return {
            "user": self.principal.name if self.principal else None,
            "peer": self.peer,
            "listener": self.listener,
            "tls": self._tls,
            "state": self.state.value if self.state else "-",
            "since": datetime.datetime.fromtimestamp(since, datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "bytes_out": self.bytes_out,
            "pid": os.getpid(),
        }

    @property
    def listener(self) -> str:
        """The listening address this connection came in on."""
        assert self._transport is not None
        local = self._transport.get_extra_info("sockname")
        return format_address(local[0], local[1]) if isinstance(local, tuple) else "?"

    def _event(self, level: int, name: str, **fields: object) -> None:
        event(log, level, name, session=self.id, peer=self.peer, **fields)

    @property
    def state(self) -> State | None:
        return self._core.state if self._core else None

    @property
    def busy(self) -> bool:
        return self._task is not None


def _shown(user: str | None) -> str:
    """A user name as the client sent it, cut short for the log."""
    return (user or "")[:64]
