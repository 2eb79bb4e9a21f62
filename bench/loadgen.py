"""The load generator: many POP3 clients on one asyncio loop (several processes if asked),
each checking every byte it downloads against the corpus.

A client is a small asyncio.Protocol with its own buffer: it finds a reply's end with one
`find` from where the last search stopped, so reading a 50 MB RETR costs a few C-speed scans,
and the generator stays cheaper than the servers it drives.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import ssl
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .corpus import Expected

TERMINATOR = b"\r\n.\r\n"
TIMEOUT = 60.0  # seconds any one session may take: a server that stalls is an error, not a hang
LARGE_REPLY = 256 * 1024  # from here a reply is received in a buffer of its own


class ProtocolError(Exception):
    """The server said something it should not have: counted as an error."""


class Client(asyncio.BufferedProtocol):
    """Receives into one growing buffer (no copy per read), scans it where the last scan
    stopped, and hands out each reply once it is complete."""

    def __init__(self) -> None:
        self.buf = bytearray(4096)  # grows for a large reply; 20,000 idle clients stay small
        self.used = 0
        self.transport: asyncio.Transport | None = None
        self._want: str | None = None
        self._waiter: asyncio.Future[tuple[bytes | bytearray, int]] | None = None
        self._scan = 0
        self.received = 0

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext | None) -> Client:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            cls, host, port, ssl=tls, server_hostname="localhost" if tls else None
        )
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.used < 2048:
            self.buf.extend(bytes(len(self.buf)))  # double: a large reply reads in large chunks
        return memoryview(self.buf)[self.used :]

    def buffer_updated(self, nbytes: int) -> None:
        self.used += nbytes
        self.received += nbytes
        if self._waiter is not None:
            self._check()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"closed by server: {exc}"))

    def _check(self) -> None:
        assert self._waiter is not None
        buf, used = self.buf, self.used
        status_end = buf.find(b"\r\n", 0, used)
        if status_end < 0:
            return
        if self._want == "line" or buf[:1] == b"-":
            end = status_end + 2
        else:
            # From the status line's own CRLF, so an empty body (".\r\n" at once) is found too.
            found = buf.find(TERMINATOR, max(status_end, self._scan), used)
            if found < 0:
                self._scan = max(status_end, used - 4)
                return
            end = found + 5
        rest = used - end
        reply: bytes | bytearray
        if end >= LARGE_REPLY:
            # Hand the buffer itself over (cut to the reply's end by `_reply`, once the
            # transport lets go of it): copying out a 50 MB reply cost the load generator more
            # than receiving it. What came after the reply starts a new buffer.
            reply = buf
            self.buf = bytearray(max(4096, 2 * rest))
            self.buf[:rest] = memoryview(buf)[end:used]
        else:
            reply = bytes(memoryview(buf)[:end])
            if rest:
                buf[:rest] = buf[end:used]
        self.used, self._scan = rest, 0
        waiter, self._waiter = self._waiter, None
        waiter.set_result((reply, end))

    async def _reply(self, want: str) -> bytes | bytearray:
        self._want = want
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._check()  # the reply may be here already
        reply, end = await waiter
        if len(reply) > end:
            del reply[end:]  # a handed-over buffer (bytes are cut already)
        return reply

    async def line(self) -> bytes | bytearray:
        return await self._reply("line")

    async def command(self, text: str) -> bytes | bytearray:
        assert self.transport is not None
        self.transport.write(text.encode() + b"\r\n")
        reply = await self.line()
        if not reply.startswith(b"+OK"):
            raise ProtocolError(f"{text.split(maxsplit=1)[0]}: {reply[:80]!r}")
        return reply

    async def multiline(self, text: str, expect: int = 0) -> bytes | bytearray:
        """The reply to `text`; `expect` is its size when known (RETR of a listed message), so
        that a large one is received into a buffer of its size, not one doubled to it."""
        assert self.transport is not None
        if expect >= LARGE_REPLY and len(self.buf) - self.used < expect + 4096:
            grown = bytearray(self.used + expect + 4096)
            grown[: self.used] = memoryview(self.buf)[: self.used]
            self.buf = grown
        self.transport.write(text.encode() + b"\r\n")
        reply = await self._reply("multi")
        if not reply.startswith(b"+OK"):
            raise ProtocolError(f"{text.split(maxsplit=1)[0]}: {reply[:80]!r}")
        return reply

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def body_of(reply: bytes | bytearray) -> bytes | bytearray | memoryview:
    """A multi-line reply's content, unstuffed, without the status line and terminator (a view
    into `reply` when there was nothing to unstuff, which is most of the time)."""
    start = reply.index(b"\r\n") + 2
    if reply.find(b"\r\n..", start - 2) < 0:
        return memoryview(reply)[start:-3]
    content = reply[start:-3]
    if content.startswith(b".."):
        content = content[1:]
    return content.replace(b"\r\n..", b"\r\n.")


async def login(
    host: str, port: int, tls: ssl.SSLContext | None, user: str, password: str
) -> Client:
    client = await Client.connect(host, port, tls)
    greeting = await client.line()
    if not greeting.startswith(b"+OK"):
        raise ProtocolError(f"greeting: {greeting[:80]!r}")
    await client.command(f"USER {user}")
    await client.command(f"PASS {password}")
    return client


async def full_session(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    user: str,
    password: str,
    expected: list[Expected],
) -> tuple[int, int]:
    """USER/PASS, STAT, LIST, UIDL, RETR of every message, QUIT: (octets read, wrong answers).

    A wrong answer (a size that is not what RETR sends, content not in the corpus) does not
    stop the session, so a server that gets sizes wrong still does all the work measured.
    """
    client = await login(host, port, tls, user, password)
    stat = (await client.command("STAT")).split()
    listing = bytes(body_of(await client.multiline("LIST"))).split(b"\r\n")[:-1]
    sizes = [int(line.split()[1]) for line in listing]
    uidls = bytes(body_of(await client.multiline("UIDL"))).split(b"\r\n")[:-1]
    if int(stat[1]) != len(expected) or len(sizes) != len(expected) or len(uidls) != len(expected):
        raise ProtocolError(f"{user}: {stat[1]!r} messages listed, {len(expected)} expected")
    wrong = int(int(stat[2]) != sum(sizes))
    wanted = Counter((e.size, e.crc) for e in expected)
    for number, size in enumerate(sizes, 1):
        content = body_of(await client.multiline(f"RETR {number}", size))
        got = (len(content), zlib.crc32(content))
        if len(content) != size:
            wrong += 1
        if wanted[got] > 0:
            wanted[got] -= 1
        else:
            wrong += 1
    await client.command("QUIT")
    client.close()
    return client.received, wrong


async def login_only(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    user: str,
    password: str,
    expected: list[Expected],
) -> tuple[int, int]:
    client = await login(host, port, tls, user, password)
    await client.command("QUIT")
    client.close()
    return client.received, 0


SCENARIOS: dict[str, Callable[..., Coroutine[Any, Any, tuple[int, int]]]] = {
    "sessions": full_session,
    "logins": login_only,
    "bulk": full_session,
}


@dataclass
class Result:
    done: int = 0
    errors: int = 0  # sessions that broke off: refused, dropped, garbled
    wrong: int = 0  # wrong answers in sessions that completed
    octets: int = 0
    elapsed: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)

    def merge(self, other: Result) -> None:
        self.done += other.done
        self.errors += other.errors
        self.wrong += other.wrong
        self.octets += other.octets
        self.elapsed = max(self.elapsed, other.elapsed)
        self.client_cpu += other.client_cpu
        self.latencies += other.latencies
        self.first_errors = (self.first_errors + other.first_errors)[:5]

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@dataclass(frozen=True)
class Job:
    scenario: str
    host: str
    port: int
    tls: bool
    workers: list[list[str]]  # users per worker
    passwords: dict[str, str]
    expected: dict[str, list[Expected]]
    duration: float
    max_per_worker: int  # 0: until the duration is over


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the peers use the bench's self-signed certificate
    return context


async def _run_job(job: Job) -> Result:
    tls = client_tls() if job.tls else None
    session = SCENARIOS[job.scenario]
    result = Result()
    deadline = time.monotonic() + job.duration

    async def worker(users: list[str]) -> None:
        i = 0
        while time.monotonic() < deadline and (not job.max_per_worker or i < job.max_per_worker):
            user = users[i % len(users)]
            i += 1
            started = time.perf_counter()
            try:
                octets, wrong = await asyncio.wait_for(
                    session(job.host, job.port, tls, user, job.passwords[user], job.expected[user]),
                    TIMEOUT,
                )
            except (ProtocolError, OSError, ConnectionError, TimeoutError) as exc:
                result.errors += 1
                if len(result.first_errors) < 5:
                    result.first_errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)
                continue
            result.latencies.append(time.perf_counter() - started)
            result.octets += octets
            result.wrong += wrong
            if wrong and len(result.first_errors) < 5:
                result.first_errors.append(f"{user}: {wrong} wrong answers")
            result.done += 1

    cpu0 = _own_cpu()
    started = time.monotonic()
    await asyncio.gather(*(worker(users) for users in job.workers))
    result.elapsed = time.monotonic() - started
    result.client_cpu = _own_cpu() - cpu0
    return result


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fast_loop() -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _process_main(job: Job, out: Any) -> None:
    _fast_loop()
    out.send(asyncio.run(_run_job(job)))
    out.close()


def run(job: Job, processes: int = 1) -> Result:
    """Run `job`, its workers split over `processes` processes."""
    if processes <= 1:
        _fast_loop()
        return asyncio.run(_run_job(job))
    shares = [job.workers[i::processes] for i in range(processes)]
    pipes, procs = [], []
    context = multiprocessing.get_context("fork")
    for share in shares:
        if not share:
            continue
        receive, send = context.Pipe(duplex=False)
        sub = Job(**{**job.__dict__, "workers": share})
        proc = context.Process(target=_process_main, args=(sub, send))
        proc.start()
        pipes.append(receive)
        procs.append(proc)
    total = Result()
    for receive in pipes:
        total.merge(receive.recv())
    for proc in procs:
        proc.join()
    return total


async def hold_idle(
    host: str,
    port: int,
    tls: bool,
    users: list[str],
    passwords: dict[str, str],
    measure: Callable[[], Coroutine[Any, Any, None]],
) -> tuple[int, int]:
    """Log `users` in (50 at a time), await `measure()` while all are open, QUIT them all.
    Returns (sessions held, errors)."""
    context = client_tls() if tls else None
    clients: list[Client] = []
    errors = 0
    for start in range(0, len(users), 50):  # within every server's listen backlog
        batch = users[start : start + 50]
        results = await asyncio.gather(
            *(
                asyncio.wait_for(login(host, port, context, u, passwords[u]), TIMEOUT)
                for u in batch
            ),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, Client):
                clients.append(r)
            else:
                errors += 1
    await measure()
    # QUIT, and wait for the answer: the maildrops are unlocked before the next measurement.
    for start in range(0, len(clients), 200):
        batch = clients[start : start + 200]
        await asyncio.gather(
            *(asyncio.wait_for(c.command("QUIT"), TIMEOUT) for c in batch), return_exceptions=True
        )
        for client in batch:
            client.close()
    return len(clients), errors
