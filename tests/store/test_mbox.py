"""The mbox backend: the store contract, the formats, the MTA's locks, and UPDATE's rewrite."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pop3d.principal import Principal
from pop3d.protocol.dotstuff import wire_size
from pop3d.protocol.maildrop import MessageInfo
from pop3d.quota import Quota
from pop3d.store.base import StorePermanentError
from pop3d.store.mbox import MboxRef, MboxStore, delivery_locks, quote, unquote
from tests.store.contract import (
    ALICE,
    Backend,
    StoreContract,
    arun,
    read_all,
    streams_in_chunks,
)


@pytest.fixture
def store(tmp_path: Path) -> MboxStore:
    (tmp_path / "mail").mkdir()
    return MboxStore(str(tmp_path / "mail" / "{user}"))


@pytest.fixture
def backend(store: MboxStore) -> Backend:
    def remove(principal: Principal, message: MessageInfo) -> None:
        """As a mail reader would: the mbox rewritten without the message."""
        ref = message.ref
        assert isinstance(ref, MboxRef)
        path = store.path_for(principal)
        data = path.read_bytes()
        rest = data[: ref.start] + data[ref.end + 1 :]
        new = path.with_name("rewritten")
        new.write_bytes(rest)
        os.replace(new, path)

    return Backend(store, lambda p, data: store.deliver(p, [data], Quota()), remove)


class TestMboxContract(StoreContract):
    def test_large_message_streams_in_chunks(self, backend: Backend) -> None:
        """As the contract's, but an mbox ends every message with a newline (the format has
        no way not to), which the wire form would add anyway."""
        streams_in_chunks(backend, b"Subject: big\n\n" + b"0123456789abcdef" * (1 << 16) * 3 + b"\n")


def listing(store: MboxStore, principal: Principal = ALICE) -> list[tuple[str, bytes]]:
    async def look() -> list[tuple[str, bytes]]:
        drop = await store.open(principal)
        try:
            return [(m.uidl, await read_all(drop, m)) for m in drop.messages]
        finally:
            await drop.close()

    return arun(look())


MBOX = (
    b"From alice@example.org Mon Dec  7 10:00:00 2026\n"
    b"Subject: one\n"
    b"X-UIDL: qpopper-uidl-1\n"
    b"\n"
    b"body one\n"
    b">From the start of a line\n"
    b">>From twice quoted\n"
    b"\n"
    b"the empty line above is content\n"
    b"\n"
    b"From bob@example.org Mon Dec  7 11:00:00 2026\n"
    b"Subject: two\n"
    b"\n"
    b"body two\n"
    b"From inside, unquoted, after a non-empty line: content\n"
    b"\n"
)


@pytest.mark.parametrize(
    ("format", "quoted"),
    [("mboxo", b">>From twice quoted\n"), ("mboxrd", b">From twice quoted\n")],
)
def test_formats_unquote_as_they_say(tmp_path: Path, format: str, quoted: bytes) -> None:
    (tmp_path / "alice").write_bytes(MBOX)
    store = MboxStore(str(tmp_path / "{user}"), format=format)
    (one_uidl, one), (two_uidl, two) = listing(store)
    assert one_uidl == "qpopper-uidl-1"  # kept from the server before
    assert one == (
        b"Subject: one\nX-UIDL: qpopper-uidl-1\n\nbody one\nFrom the start of a line\n"
        + quoted + b"\nthe empty line above is content\n"
    )  # fmt: skip
    assert two == (
        b"Subject: two\n\nbody two\nFrom inside, unquoted, after a non-empty line: content\n"
    )

    async def sizes() -> list[int]:
        drop = await store.open(ALICE)
        await drop.close()
        return [m.size for m in drop.messages]

    assert arun(sizes()) == [wire_size([one]), wire_size([two])]
    assert two_uidl == listing(store)[1][0]  # stable


@pytest.mark.parametrize("format", ["mboxo", "mboxrd"])
def test_quoting_round_trips_byte_for_byte(store: MboxStore, format: str) -> None:
    store.format = format
    lines = [b"From x\n", b">From y\n", b">>From z\n", b"From\n", b"plain\n", b">>>From q\n"]
    for line in lines:
        back = unquote(quote(line, format), format)
        if format == "mboxrd" or not line.startswith(b">From"):
            assert back == line
    body = b"Subject: q\n\n" + b"".join(lines[:1] + lines[2:]) if format == "mboxo" else (
        b"Subject: q\n\n" + b"".join(lines)
    )  # mboxo cannot carry ">From " through: the format's known loss
    store.deliver(ALICE, [body], Quota())
    assert listing(store)[0][1] == body


def test_not_an_mbox_is_refused_and_left_alone(store: MboxStore) -> None:
    path = store.path_for(ALICE)
    path.write_bytes(b"Subject: no From line\n\nbody\n")
    with pytest.raises(StorePermanentError, match="not an mbox"):
        listing(store)
    assert path.read_bytes() == b"Subject: no From line\n\nbody\n"


def test_update_keeps_mail_that_arrived_during_the_session(store: MboxStore) -> None:
    for i in range(3):
        store.deliver(ALICE, [b"Subject: %d\n\nbody %d\n" % (i, i)], Quota())
    path = store.path_for(ALICE)
    os.chmod(path, 0o640)

    async def session() -> None:
        drop = await store.open(ALICE)
        store.deliver(ALICE, [b"Subject: late\n\nduring the session\n"], Quota())
        result = await drop.expunge([drop.messages[0], drop.messages[2]])
        assert (result.removed, result.vanished) == (2, 0)
        await drop.close()

    arun(session())
    assert [body for _, body in listing(store)] == [
        b"Subject: 1\n\nbody 1\n", b"Subject: late\n\nduring the session\n"
    ]  # fmt: skip
    assert path.stat().st_mode & 0o777 == 0o640  # the rewrite kept the mode
    assert not path.with_name("alice.pop3d-new").exists()


def test_the_session_does_not_hold_the_mta_s_locks(store: MboxStore) -> None:
    store.deliver(ALICE, [b"Subject: a\n\nb\n"], Quota())
    path = store.path_for(ALICE)

    async def check() -> None:
        drop = await store.open(ALICE)
        # What an MTA does to append: the dotlock and fcntl, at once, during the session.
        with open(path, "ab") as f, delivery_locks(path, f):
            f.write(b"From x Mon Dec  7 10:00:00 2026\nSubject: c\n\nd\n\n")
        await drop.close()

    arun(check())
    assert len(listing(store)) == 2


def test_a_dotlock_held_by_the_mta_is_waited_for(store: MboxStore) -> None:
    store.deliver(ALICE, [b"Subject: a\n\nb\n"], Quota())
    path = store.path_for(ALICE)
    dotlock = path.with_name("alice.lock")
    dotlock.write_bytes(b"")
    threading.Timer(0.5, dotlock.unlink).start()
    started = time.monotonic()
    assert len(listing(store)) == 1
    assert time.monotonic() - started >= 0.4


def test_an_unchanged_mbox_is_not_read_again(store: MboxStore) -> None:
    for i in range(3):
        store.deliver(ALICE, [b"Subject: %d\n\nbody\n" % i], Quota())
    first = listing(store)
    path = str(store.path_for(ALICE))
    parsed = store._parsed[path]
    assert listing(store) == first
    assert store._parsed[path] is parsed  # the same parse: nothing was read again
    store.deliver(ALICE, [b"Subject: more\n\nbody\n"], Quota())
    assert listing(store)[:3] == first  # grown: parsed on from the last message
    assert store._parsed[path].messages[:2] == parsed.messages[:2]


def test_a_large_mbox_lists_in_bounded_memory(tmp_path: Path) -> None:
    """2,000 messages, and one of 40 MB on one line: listing reads the file in pieces."""
    path = tmp_path / "alice"
    with open(path, "wb") as f:
        for i in range(2000):
            f.write(b"From a Mon Dec  7 10:00:00 2026\nSubject: %d\n\n%s\n\n" % (i, b"x" * 500))
        f.write(b"From a Mon Dec  7 10:00:00 2026\nSubject: long\n\n" + b"y" * 40_000_000 + b"\n")
    code = (
        "import sys; sys.path.insert(0, 'src');"
        "from pop3d.store.mbox import MboxStore; from tests.store.contract import ALICE, arun;"
        f"s = MboxStore({str(tmp_path / '{user}')!r});"
        "d = arun(s.open(ALICE)); print(len(d.messages), d.messages[-1].size,"
        " [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out[:2] == ["2001", str(len(b"Subject: long\r\n\r\n") + 40_000_000 + 2)]
    assert int(out[2]) < 60_000  # KiB of peak RSS: the interpreter and a few pieces, not 40 MB


def test_kill_9_during_the_rewrite_leaves_the_old_or_the_new_mbox(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    store = MboxStore(str(tmp_path / "{user}"))
    for i in range(200):
        store.deliver(ALICE, [b"Subject: %d\n\n" % i + b"z" * 20_000 + b"\n"], Quota())
    before = [u for u, _ in listing(store)]
    code = (
        "import sys; sys.path.insert(0, 'src');"
        "from pop3d.store.mbox import MboxStore; from tests.store.contract import ALICE, arun;"
        f"s = MboxStore({str(tmp_path / '{user}')!r});"
        "d = arun(s.open(ALICE)); print('go', flush=True);"
        "arun(d.expunge(d.messages[::2]))"
    )
    root = Path(__file__).resolve().parents[2]
    outcomes = set()
    for delay in (0.0, 0.005, 0.02, 0.05, 0.2):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=root)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"go\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        path.with_name("alice.lock").unlink(missing_ok=True)  # as its stale timeout would
        now = [u for u, _ in listing(MboxStore(str(tmp_path / "{user}")))]
        assert now in (before, before[1::2]), len(now)
        outcomes.add(len(now))
        if now != before:
            break
    assert outcomes  # each run left a whole mbox
    with open(path, "rb") as f:  # and no lock is left behind
        fcntl.lockf(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)


def test_delivery_after_a_message_with_no_empty_line_after_it(store: MboxStore) -> None:
    path = store.path_for(ALICE)
    path.write_bytes(b"From a Mon Dec  7 10:00:00 2026\nSubject: a\n\nno newline at the end")
    store.deliver(ALICE, [b"Subject: b\n\nbody b\n"], Quota())
    assert [body for _, body in listing(store)] == [
        b"Subject: a\n\nno newline at the end\n", b"Subject: b\n\nbody b\n"
    ]  # fmt: skip
