"""The Maildir backend: the store contract, and what sharing a Maildir with others needs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pop3d.principal import Principal
from pop3d.protocol.maildrop import MessageInfo
from pop3d.store import nowait
from pop3d.store.base import MaildropLocked, StorePermanentError
from pop3d.store.maildir import SIZES_FILE, MaildirRef, MaildirStore, deliver, uidl_for
from tests.conftest import not_here
from tests.store.contract import ALICE, Backend, StoreContract, arun, read_all

T = TypeVar("T")


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(str(tmp_path / "mail/{domain}/{local}/Maildir"))


@pytest.fixture
def backend(store: MaildirStore) -> Backend:
    def remove(principal: Principal, message: MessageInfo) -> None:
        ref = message.ref
        assert isinstance(ref, MaildirRef)
        os.unlink(store.path_for(principal) / ref.subdir / ref.name)

    return Backend(store, lambda p, data: _deliver(store, p, data), remove)


def _deliver(store: MaildirStore, principal: Principal, data: bytes) -> str:
    name = deliver(store.path_for(principal), [data])
    time.sleep(0.000002)  # distinct microseconds keep the order test meaningful
    return name


class TestMaildirContract(StoreContract):
    pass


def put(maildir: Path, sub: str, name: str, data: bytes) -> Path:
    for d in ("tmp", "new", "cur"):
        (maildir / d).mkdir(parents=True, exist_ok=True)
    path = maildir / sub / name
    path.write_bytes(data)
    return path


def listing(store: MaildirStore, principal: Principal = ALICE) -> list[MessageInfo]:
    async def go() -> list[MessageInfo]:
        drop = await store.open(principal)
        messages = list(drop.messages)
        await drop.close()
        return messages

    return arun(go())


def test_uidl_survives_a_move_to_cur_and_flag_changes(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    put(md, "new", "1700000000.M1P1.host,S=5", b"hi\nx\n")
    before = listing(store)
    assert before[0].uidl == "1700000000.M1P1.host"
    os.rename(md / "new/1700000000.M1P1.host,S=5", md / "cur/1700000000.M1P1.host,S=5:2,S")
    assert [m.uidl for m in listing(store)] == [before[0].uidl]
    os.rename(md / "cur/1700000000.M1P1.host,S=5:2,S", md / "cur/1700000000.M1P1.host,S=5:2,RS")
    assert [m.uidl for m in listing(store)] == [before[0].uidl]


def test_a_message_renamed_during_the_session_is_still_read_and_deleted(
    store: MaildirStore,
) -> None:
    md = store.path_for(ALICE)
    put(md, "new", "1700000000.M1P1.host", b"body\n")

    async def go() -> None:
        drop = await store.open(ALICE)
        os.rename(md / "new/1700000000.M1P1.host", md / "cur/1700000000.M1P1.host:2,S")
        assert await read_all(drop, drop.messages[0]) == b"body\n"
        os.rename(md / "cur/1700000000.M1P1.host:2,S", md / "cur/1700000000.M1P1.host:2,FS")
        result = await drop.expunge(drop.messages)
        assert (result.removed, result.vanished) == (1, 0)
        await drop.close()

    arun(go())
    assert os.listdir(md / "cur") == os.listdir(md / "new") == []


def test_sizes_come_from_w_in_the_name_without_reading(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    # The content disagrees with W= on purpose: the size must come from the name.
    put(md, "cur", "1700000000.M1P1.host,S=3,W=999:2,S", b"abc")
    assert listing(store)[0].size == 999
    assert not (md / SIZES_FILE).exists()


def test_computed_sizes_are_cached(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    path = put(md, "new", "1700000000.M1P1.host", b"a\nb\n")
    assert listing(store)[0].size == 6
    assert (md / SIZES_FILE).read_text() == "1700000000.M1P1.host\t6\n"
    path.write_bytes(b"changed behind our back, to prove the cache is used\n")
    assert listing(store)[0].size == 6
    path.unlink()
    assert listing(store) == []
    assert (md / SIZES_FILE).read_text() == ""  # pruned


def test_order_is_by_delivery_time_then_name(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    put(md, "cur", "1700000002.M5P1.h:2,S", b"c\n")
    put(md, "new", "1700000001.M40P1.h", b"b\n")
    put(md, "new", "1700000001.M5P1.h", b"a\n")
    put(md, "new", "junk-name", b"z\n")
    assert [m.uidl for m in listing(store)] == [
        "junk-name",
        "1700000001.M5P1.h",
        "1700000001.M40P1.h",
        "1700000002.M5P1.h",
    ]


def test_dot_files_and_tmp_are_not_messages(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    put(md, "new", ".hidden", b"x\n")
    put(md, "tmp", "1700000000.M1P1.h", b"being written\n")
    assert listing(store) == []


def test_only_regular_files_are_messages(store: MaildirStore) -> None:
    # A FIFO would block whoever opens it: it is not listed, and the login does not hang.
    md = store.path_for(ALICE)
    put(md, "new", "1700000001.M1P1.h", b"real\n")
    os.mkfifo(md / "new/1700000000.M1P1.h")
    (md / "cur/1700000002.M1P1.h:2,S").mkdir()
    assert [m.ref.name for m in arun(store.open(ALICE)).messages] == ["1700000001.M1P1.h"]


def test_read_file_takes_only_whole_regular_files(tmp_path: Path, read_file: ReadFile) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"a\nb\n")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    large = tmp_path / "large"
    large.write_bytes(b"x" * (nowait.LIMIT + 1))
    os.mkfifo(tmp_path / "fifo")
    assert read_file(str(small)) == b"a\nb\n"
    assert read_file(str(empty)) == b""
    assert read_file(str(tmp_path / "missing")) is None
    assert read_file(str(large)) is None
    assert read_file(str(tmp_path / "fifo")) is None  # and it did not block
    assert read_file(str(tmp_path)) is None


@pytest.mark.usefixtures("read_file")
def test_open_file_opens_what_the_kernel_has_at_hand_and_never_creates(tmp_path: Path) -> None:
    there = tmp_path / "there"
    there.write_bytes(b"x")
    fd = nowait.open_file(str(there), os.O_RDWR)
    assert fd is not None
    os.close(fd)
    assert nowait.open_file(str(tmp_path / "missing"), os.O_RDWR) is None
    with pytest.raises(ValueError):
        nowait.open_file(str(tmp_path / "new"), os.O_RDWR | os.O_CREAT)
    st = nowait.stat_now(str(tmp_path))
    assert st is not None
    assert st.st_ino == os.stat(tmp_path).st_ino


def test_unsuitable_unique_names_get_a_hashed_uidl() -> None:
    long = "x" * 80
    assert len(uidl_for(long)) == 40
    assert uidl_for("with space") != "with space"
    assert uidl_for("with space") == uidl_for("with space")
    assert uidl_for("1.M1P1.h,S=10,W=12") == "1.M1P1.h"


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "/etc", "a\0b", ".hidden", "..", "a b", "", "x@../y"]
)
def test_names_that_could_escape_the_mail_root_are_refused(tmp_path: Path, name: str) -> None:
    store = MaildirStore(str(tmp_path / "root/{user}/Maildir"))
    with pytest.raises(StorePermanentError):
        arun(store.open(Principal(name)))
    assert not (tmp_path / "root").exists()


def test_deliver_is_complete_before_it_is_visible(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    name = deliver(md, [b"a\n", b"b\r\n"])
    assert name.endswith(",S=5,W=6")
    assert os.listdir(md / "new") == [name]
    assert os.listdir(md / "tmp") == []


def test_deliver_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"

    def broken():  # type: ignore[no-untyped-def]
        yield b"partial\n"
        raise OSError("disk on fire")

    with pytest.raises(OSError):
        deliver(md, broken())
    assert os.listdir(md / "new") == os.listdir(md / "tmp") == []


HOLDER = """
import asyncio, sys
from pop3d.principal import Principal
from pop3d.store.maildir import MaildirStore
async def main():
    drop = await MaildirStore(sys.argv[1]).open(Principal("alice"))
    print("locked", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_the_lock_holds_across_processes_and_dies_with_its_holder(store: MaildirStore) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store.template], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MaildropLocked):
            listing(store)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert listing(store) == []  # no stale lock after kill -9


def _age(maildir: Path) -> None:
    """Make new/ and cur/ look untouched for a minute, so a listing of them is kept."""
    past = time.time_ns() - 60 * 1_000_000_000
    for sub in ("new", "cur"):
        os.utime(maildir / sub, ns=(past, past))


def test_a_kept_listing_is_never_stale(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    put(md, "new", "1700000000.M1P1.h", b"one\n")
    _age(md)
    first = listing(store)
    assert listing(store) == first  # unchanged directories: the kept listing
    put(md, "new", "1700000001.M1P1.h", b"two\n")  # the same second: mtime moves anyway
    assert [m.uidl for m in listing(store)] == ["1700000000.M1P1.h", "1700000001.M1P1.h"]
    _age(md)
    listing(store)
    os.rename(md / "new/1700000000.M1P1.h", md / "cur/1700000000.M1P1.h:2,S")
    (md / "new/1700000001.M1P1.h").unlink()
    after = listing(store)
    assert [m.uidl for m in after] == ["1700000000.M1P1.h"]
    assert after[0].ref == MaildirRef("cur", "1700000000.M1P1.h:2,S", "1700000000.M1P1.h")


class CountingPool(ThreadPoolExecutor):
    """A real thread pool that counts the work sent to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pooled(tmp_path: Path) -> Iterator[tuple[MaildirStore, CountingPool]]:
    """A store on a counting pool, and Alice's Maildir with one message, quiet long enough for
    its listing to be kept."""
    pool = CountingPool()
    store = MaildirStore(str(tmp_path / "mail/{domain}/{local}/Maildir"), pool)
    md = store.path_for(ALICE)
    put(md, "new", "1700000000.M1P1.h", b"one\n")
    _age(md)
    yield store, pool
    pool.shutdown()


@pytest.mark.usefixtures("read_file")
def test_a_returning_user_is_logged_in_without_the_pool(
    pooled: tuple[MaildirStore, CountingPool],
) -> None:
    store, pool = pooled
    md = store.path_for(ALICE)

    async def go() -> None:
        first = await store.open(ALICE)  # a first login: the pool makes the lock file, scans
        assert pool.submitted == 1
        with pytest.raises(MaildropLocked):  # refused at once on the loop too
            await store.open(ALICE)
        await first.close()
        submitted = pool.submitted
        again = await store.open(ALICE)
        assert pool.submitted == submitted  # lock and kept listing, both on the loop
        assert again.messages == first.messages
        await again.close()
        put(md, "new", "1700000001.M1P1.h", b"two\n")
        changed = await store.open(ALICE)  # locked on the loop, scanned on the pool
        assert pool.submitted == submitted + 1
        assert [m.uidl for m in changed.messages] == ["1700000000.M1P1.h", "1700000001.M1P1.h"]
        await changed.close()

    arun(go())


def test_a_maildrop_the_kernel_must_look_up_is_opened_on_the_pool(
    pooled: tuple[MaildirStore, CountingPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, pool = pooled

    async def go() -> None:
        await (await store.open(ALICE)).close()
        monkeypatch.setattr(nowait, "open_file", lambda path, flags: None)  # EAGAIN: evicted
        drop = await store.open(ALICE)
        assert pool.submitted == 2
        assert [m.uidl for m in drop.messages] == ["1700000000.M1P1.h"]
        await drop.close()

    arun(go())


def _evict(path: Path) -> None:
    """Drop a file's pages from the page cache, as if it had not been read for a long time."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _evicted(read: Callable[[], object], path: Path) -> bool:
    """Evict `path` until `read` (a read on the loop) comes back empty-handed: the kernel may
    keep a page it was still adding to its lists on another CPU (about one time in 30 here)."""
    for _ in range(50):
        _evict(path)
        if read() is None:
            return True
        time.sleep(0.01)
    return False


ReadFile = Callable[[str], "bytes | bytearray | None"]


@pytest.fixture(scope="module", params=["c", "ctypes"])
def read_file(request: pytest.FixtureRequest) -> Iterator[ReadFile]:
    """The tests of reading on the loop run on both ways of making the calls."""
    if not nowait.AVAILABLE:
        not_here("openat2 with RESOLVE_CACHED needs Linux 5.12 or later")
    if request.param == "c":
        if nowait._open_cached is None:
            not_here("the C module _nowait was not built (no C compiler or Python headers)")
        chosen, opener = nowait.read_in_c, nowait._open_cached
    else:
        chosen, opener = nowait.read_with_ctypes, nowait.open_with_ctypes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nowait, "read_file", chosen)
        patch.setattr(nowait, "open_file", opener)
        yield chosen


def _requires_nowait(directory: Path) -> None:
    if not nowait.AVAILABLE:
        not_here("openat2 with RESOLVE_CACHED needs Linux 5.12 or later")
    # Probed on a file of its own: a read that misses starts the kernel's read-ahead.
    probe = directory / "probe"
    probe.write_bytes(b"probe")
    evicted = _evicted(lambda: nowait.read_file(str(probe)), probe)
    probe.unlink()
    if not evicted:
        not_here("this filesystem keeps files in memory: nothing to evict")


@pytest.mark.usefixtures("read_file")
def test_read_now_takes_what_the_kernel_holds_and_never_what_it_must_fetch(
    store: MaildirStore,
) -> None:
    md = store.path_for(ALICE)
    put(md, "new", "1700000000.M1P1.host", b"first\n")
    cold = put(md, "new", "1700000001.M1P1.host", b"second\n")
    big = put(md, "new", "1700000002.M1P1.host", b"x" * nowait.LIMIT + b"\n")

    async def go() -> None:
        drop = await store.open(ALICE)  # sizing the messages has read them all
        _requires_nowait(md)
        first, second, large = drop.messages
        # Not in the page cache: it would wait for the disk, so the pool reads it.
        assert _evicted(lambda: drop.read_now(second), cold)
        assert drop.read_now(first) == b"first\n"
        assert drop.read_now(large) is None  # too large to take whole: it is streamed
        assert await read_all(drop, second) == b"second\n"
        assert await read_all(drop, large) == big.read_bytes()
        await drop.close()

    arun(go())


@pytest.mark.usefixtures("read_file")
def test_a_pool_read_brings_the_small_messages_after_it(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    paths = [put(md, "new", f"17000000{i:02d}.M1P1.host", b"m%d\n" % i) for i in range(5)]

    async def go() -> None:
        drop = await store.open(ALICE)
        _requires_nowait(md)
        assert _evicted(lambda: drop.read_now(drop.messages[0]), paths[0])
        assert await read_all(drop, drop.messages[0]) == b"m0\n"
        for path in paths[1:]:
            _evict(path)
        # Read ahead in the same trip to the pool: in memory though no longer in the cache.
        ahead = [drop.read_now(m) for m in drop.messages[1:]]
        assert ahead == [b"m1\n", b"m2\n", b"m3\n", b"m4\n"]
        await drop.close()

    arun(go())


@pytest.mark.usefixtures("read_file")
def test_read_now_of_a_message_moved_away_leaves_it_to_the_pool(store: MaildirStore) -> None:
    md = store.path_for(ALICE)
    put(md, "new", "1700000000.M1P1.host", b"body\n")

    async def go() -> None:
        drop = await store.open(ALICE)
        os.rename(md / "new/1700000000.M1P1.host", md / "cur/1700000000.M1P1.host:2,S")
        assert drop.read_now(drop.messages[0]) is None
        assert await read_all(drop, drop.messages[0]) == b"body\n"
        await drop.close()

    arun(go())
