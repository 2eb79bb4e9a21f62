"""The supervisor: the process `pop3d serve` runs as once it has given up root.

It forks the workers (each serving POP3 and LMTP on the shared listening sockets), and then
only: restarts a worker that dies (a few times a minute at most), passes SIGHUP and SIGTERM
on, answers the control socket (`pop3d who`, `pop3d kick`) by asking every worker, serves
`/metrics` from what all workers counted, and tells systemd (sd_notify) that the server is
ready, reloading or stopping, how many sessions it has, and that it is alive.

It is one thread with one `selectors` loop and no asyncio, so that forking a worker at any
time is safe: nothing else runs in it to leave a lock held in the child. Each client of the
control and metrics sockets is read without blocking and answered within a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Config
from ..server.listeners import Listeners
from . import control
from .privileges import die_with_parent
from .systemd import Notifier

log = logging.getLogger("pop3d")

RESTARTS_PER_MINUTE = 5
CLIENT_DEADLINE = 5.0  # seconds a control or metrics client has to send its request
WORKER_ANSWER_DEADLINE = 5.0  # seconds the workers have to answer a control request
RELOAD_DEADLINE = 30.0
MAX_REQUEST = 64 * 1024


@dataclass
class Worker:
    pid: int
    channel: socket.socket
    buffer: bytes = b""
    ready: bool = False
    sessions: int = 0
    heard: float = field(default_factory=time.monotonic)


@dataclass
class Client:
    """A connection to the control or the metrics socket."""

    sock: socket.socket
    kind: str  # "control" or "metrics"
    deadline: float
    buffer: bytes = b""
    request: dict[str, Any] | None = None  # a control request passed on to the workers
    pending: dict[int, int] = field(default_factory=dict)  # worker pid: id of the request
    answers: list[dict[str, Any]] = field(default_factory=list)
    asked: int = 0


class Supervisor:
    def __init__(
        self,
        config: Config,
        serve: Callable[[socket.socket], int],
        listeners: Listeners,
        *,
        control_socket: socket.socket | None,
        metrics_socket: socket.socket | None,
        metrics_dir: Path | None,
        notifier: Notifier,
    ) -> None:
        """`serve(channel)` is what a forked worker runs (it never returns here)."""
        self.config = config
        self._serve = serve
        self._listeners = listeners
        self._control_socket = control_socket
        self._metrics_socket = metrics_socket
        self._metrics_dir = metrics_dir
        self._notify = notifier
        self._selector = selectors.DefaultSelector()
        self._workers: dict[int, Worker] = {}
        self._clients: dict[socket.socket, Client] = {}
        self._ids = itertools.count(1)
        self._restarts: list[float] = []
        self._signals: list[int] = []
        self._stopping = False
        self._ready = False
        self._reloading: set[int] | None = None  # workers yet to say they reloaded
        self._reload_deadline = 0.0
        self._status = ""
        self._watchdog_at = 0.0

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        signal.set_wakeup_fd(wake_write.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda sig, _frame: self._signals.append(sig))
        self._selector.register(wake_read, selectors.EVENT_READ, "wake")
        for sock, kind in ((self._control_socket, "control"), (self._metrics_socket, "metrics")):
            if sock is not None:
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, kind)
        for _ in range(self.config.server.workers):
            self._spawn()
        while self._workers or not self._stopping:
            for key, _ in self._selector.select(self._timeout()):
                self._dispatch(key)
            self._handle_signals()
            self._tick()
        self._listeners.close()
        for sock in (self._control_socket, self._metrics_socket):
            if sock is not None:
                sock.close()
        signal.set_wakeup_fd(-1)
        log.info("stopped")
        return 0

    def _timeout(self) -> float:
        deadlines = [c.deadline for c in self._clients.values()]
        if self._reloading is not None:
            deadlines.append(self._reload_deadline)
        wait = min(deadlines, default=time.monotonic() + 1.0) - time.monotonic()
        return max(0.0, min(wait, 1.0))

    def _dispatch(self, key: selectors.SelectorKey) -> None:
        match key.data:
            case "wake":
                with contextlib.suppress(BlockingIOError):
                    key.fileobj.recv(4096)  # type: ignore[union-attr]
            case "control" | "metrics":
                self._accept(key.fileobj, key.data)  # type: ignore[arg-type]
            case Worker() as worker:
                self._from_worker(worker)
            case Client() as client:
                self._from_client(client)

    def _tick(self) -> None:
        now = time.monotonic()
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            if client.request is not None:
                self._answer_control(client)  # with what the workers said in time
            else:
                self._drop(client)
        if self._reloading is not None and now >= self._reload_deadline:
            log.warning("workers %s did not reload in time", sorted(self._reloading))
            self._reloaded()
        total = sum(w.sessions for w in self._workers.values())
        status = f"{total} session{'s' if total != 1 else ''}"
        if self._ready and status != self._status:
            self._status = status
            self._notify.status(status)
        interval = self._notify.watchdog_interval
        if interval and now >= self._watchdog_at and self._workers_alive(now, 2 * interval):
            self._watchdog_at = now + interval
            self._notify.watchdog()

    def _workers_alive(self, now: float, within: float) -> bool:
        """Every worker's loop has been heard from lately: only then is the server alive."""
        return all(now - w.heard < within for w in self._workers.values())

    # ---- signals and workers -------------------------------------------------------------

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for sig in signals:
            if sig == signal.SIGCHLD:
                self._reap()
            elif sig == signal.SIGHUP and not self._stopping:
                log.info("reloading")
                self._notify.reloading()
                self._reloading = set(self._workers)
                self._reload_deadline = time.monotonic() + RELOAD_DEADLINE
                self._signal_workers(signal.SIGHUP)
                if not self._reloading:
                    self._reloaded()
            elif sig in (signal.SIGTERM, signal.SIGINT) and not self._stopping:
                self._stopping = True
                log.info("stopping")
                self._notify.stopping()
                self._listeners.close()
                self._signal_workers(signal.SIGTERM)

    def _signal_workers(self, sig: int) -> None:
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker: nothing of the supervisor's loop comes along
            code = 70
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                die_with_parent()
                ours.close()
                for other in self._workers.values():
                    other.channel.close()
                for client in self._clients.values():
                    client.sock.close()
                for sock in (self._control_socket, self._metrics_socket):
                    if sock is not None:
                        sock.close()
                self._selector.close()
                code = self._serve(theirs)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        worker = Worker(pid, ours)
        self._workers[pid] = worker
        self._selector.register(ours, selectors.EVENT_READ, worker)
        log.info("worker %d started", pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is None:
                continue
            self._selector.unregister(worker.channel)
            worker.channel.close()
            if self._metrics_dir is not None:
                from ..server.metrics import forget_process  # noqa: PLC0415 - multiprocess

                forget_process(pid)
            self._worker_gone(pid)
            if self._stopping:
                continue
            log.error("worker %d exited (status %d)", pid, os.waitstatus_to_exitcode(status))
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if t > now - 60] + [now]
            if len(self._restarts) > RESTARTS_PER_MINUTE:
                log.error("workers keep dying: stopping")
                self._signals.append(signal.SIGTERM)
                continue
            self._spawn()

    def _worker_gone(self, pid: int) -> None:
        """Nothing waits for a worker that is gone."""
        for client in list(self._clients.values()):
            if client.pending.pop(pid, None) is not None and not client.pending:
                self._answer_control(client)
        if self._reloading is not None:
            self._reloading.discard(pid)
            if not self._reloading:
                self._reloaded()

    def _from_worker(self, worker: Worker) -> None:
        data = _receive(worker.channel)
        if not data:
            return  # nothing yet, or it is exiting (SIGCHLD will say so)
        worker.heard = time.monotonic()
        worker.buffer += data
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            message = control.decode(line)
            if message is None:
                continue
            if "sessions" in message and isinstance(message["sessions"], int):
                worker.sessions = message["sessions"]
            if message.get("ready") and not worker.ready:
                worker.ready = True
                if not self._ready and all(w.ready for w in self._workers.values()):
                    self._ready = True
                    log.info("pop3d %s ready (%d workers)", __version__, len(self._workers))
                    self._notify.ready("0 sessions")
                    self._status = "0 sessions"
            if message.get("reloaded") and self._reloading is not None:
                self._reloading.discard(worker.pid)
                if not self._reloading:
                    self._reloaded()
            if "reply" in message:
                self._worker_answered(worker.pid, message)

    def _reloaded(self) -> None:
        self._reloading = None
        log.info("reloaded")
        self._notify.ready(self._status or "0 sessions")

    # ---- control and metrics clients -----------------------------------------------------

    def _accept(self, listener: socket.socket, kind: str) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("accept on the %s socket failed: %s", kind, exc)
            return
        sock.setblocking(False)
        client = Client(sock, kind, time.monotonic() + CLIENT_DEADLINE)
        self._clients[sock] = client
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _from_client(self, client: Client) -> None:
        data = _receive(client.sock)
        if data is None:
            return
        if not data or len(client.buffer) + len(data) > MAX_REQUEST:
            self._drop(client)
            return
        client.buffer += data
        if client.kind == "metrics":
            if b"\r\n\r\n" in client.buffer or b"\n\n" in client.buffer:
                self._answer_metrics(client)
        elif b"\n" in client.buffer and client.request is None:
            self._start_control(client)

    def _answer_metrics(self, client: Client) -> None:
        request_line = client.buffer.split(b"\n", 1)[0].split()
        if len(request_line) < 2 or request_line[0] != b"GET":
            self._reply_http(client, "405 Method Not Allowed", b"GET /metrics only\n")
        elif request_line[1].split(b"?")[0] != b"/metrics" or self._metrics_dir is None:
            self._reply_http(client, "404 Not Found", b"try /metrics\n")
        else:
            from ..server.metrics import CONTENT_TYPE, exposition  # noqa: PLC0415

            self._reply_http(client, "200 OK", exposition(self._metrics_dir), CONTENT_TYPE)

    def _reply_http(
        self, client: Client, status: str, body: bytes, kind: str = "text/plain"
    ) -> None:
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self._send_and_drop(client, head + body)

    def _start_control(self, client: Client) -> None:
        request = control.decode(client.buffer.split(b"\n", 1)[0])
        op = request.get("op") if request else None
        if request is None or op not in control.OPS:
            self._send_and_drop(client, control.encode({"error": "unknown request"}))
            return
        if op == "kick" and not isinstance(request.get("user"), str):
            self._send_and_drop(client, control.encode({"error": "kick needs a user"}))
            return
        client.request = request
        client.deadline = time.monotonic() + WORKER_ANSWER_DEADLINE
        client.asked = len(self._workers)
        for worker in self._workers.values():
            message = {**request, "id": next(self._ids)}
            with contextlib.suppress(OSError):  # small: the channel's buffer takes it
                worker.channel.sendall(control.encode(message))
                client.pending[worker.pid] = message["id"]
        if not client.pending:
            self._answer_control(client)

    def _worker_answered(self, pid: int, message: dict[str, Any]) -> None:
        for client in list(self._clients.values()):
            if client.pending.get(pid) == message["reply"]:
                del client.pending[pid]
                client.answers.append(message)
                if not client.pending:
                    self._answer_control(client)
                return

    def _answer_control(self, client: Client) -> None:
        assert client.request is not None
        answers = client.answers
        if client.request["op"] == "who":
            sessions = [s for a in answers for s in a.get("sessions", [])]
            result: dict[str, Any] = {"sessions": sorted(sessions, key=lambda s: s["since"])}
        else:
            result = {"kicked": sum(int(a.get("kicked", 0)) for a in answers)}
        if len(answers) < client.asked:
            result["incomplete"] = True  # a worker did not answer in time
        self._send_and_drop(client, control.encode(result))

    def _send_and_drop(self, client: Client, data: bytes) -> None:
        try:
            client.sock.setblocking(True)
            client.sock.settimeout(1.0)  # answers are small: the socket buffer takes them
            client.sock.sendall(data)
        except OSError:
            pass
        self._drop(client)

    def _drop(self, client: Client) -> None:
        self._clients.pop(client.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()


def _receive(sock: socket.socket) -> bytes | None:
    """What a readable non-blocking socket has: None if nothing after all, b"" at its end."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
