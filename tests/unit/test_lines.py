from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pop3d.protocol.lines import ENDLESS_MARGIN, LINE_ENDLESS, LINE_TOO_LONG, LineBuffer


def drain(buf: LineBuffer) -> list[bytes | object]:
    out: list[bytes | object] = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


def test_crlf_and_bare_lf_both_end_a_line() -> None:
    buf = LineBuffer(100)
    buf.feed(b"one\r\ntwo\nthree")
    assert drain(buf) == [b"one", b"two"]
    buf.feed(b"\r\n")
    assert drain(buf) == [b"three"]
    assert buf.buffered == 0


def test_cr_split_from_its_lf() -> None:
    buf = LineBuffer(100)
    buf.feed(b"abc\r")
    assert drain(buf) == []
    buf.feed(b"\n")
    assert drain(buf) == [b"abc"]


def test_a_long_line_is_reported_once_and_dropped_as_it_arrives() -> None:
    buf = LineBuffer(10)
    buf.feed(b"x" * 11)
    assert drain(buf) == [LINE_TOO_LONG]
    for _ in range(ENDLESS_MARGIN // 100 - 1):  # short of the margin: the line may still end
        buf.feed(b"y" * 100)
        assert drain(buf) == []
        assert buf.buffered <= 100
    buf.feed(b"tail\r\nnext\r\n")
    assert drain(buf) == [b"next"]


def test_a_long_line_arriving_whole_is_reported() -> None:
    buf = LineBuffer(10)
    buf.feed(b"x" * 50 + b"\r\nok\r\n")
    assert drain(buf) == [LINE_TOO_LONG, b"ok"]


def test_limit_counts_the_line_without_its_end() -> None:
    buf = LineBuffer(10)
    buf.feed(b"x" * 10 + b"\r\n")
    assert drain(buf) == [b"x" * 10]


def test_clear_forgets_everything() -> None:
    buf = LineBuffer(10)
    buf.feed(b"STLS\r\nUSER x\r\n")
    assert buf.next_line() == b"STLS"
    buf.clear()
    assert drain(buf) == []
    assert buf.buffered == 0


lines = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")), max_size=30
)


@given(lines, st.lists(st.integers(1, 64), min_size=1))
def test_lines_come_back_whatever_the_chunking(items: list[bytes], sizes: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in items)
    buf = LineBuffer(64)
    out: list[bytes | object] = []
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        buf.feed(data[pos : pos + size])
        pos += size
        i += 1
        out += drain(buf)
    assert out == items
    assert buf.buffered == 0


@given(st.binary(max_size=3000), st.integers(1, 200))
def test_buffer_stays_bounded(data: bytes, chunk: int) -> None:
    buf = LineBuffer(100)
    for i in range(0, len(data), chunk):
        buf.feed(data[i : i + chunk])
        drain(buf)
        assert buf.buffered <= 100 + chunk


def test_a_line_that_never_ends_is_given_up_on_past_the_margin() -> None:
    buf = LineBuffer(300)
    limit = 300 + ENDLESS_MARGIN
    fed = 0
    results: list[bytes | object] = []
    while LINE_ENDLESS not in results:
        buf.feed(b"x" * 1000)
        fed += 1000
        results += drain(buf)
        assert buf.buffered <= 1000
    assert results == [LINE_TOO_LONG, LINE_ENDLESS]
    assert limit < fed <= limit + 1000


def test_a_line_just_within_the_margin_still_ends_normally() -> None:
    # The margin counts every octet before the LF (a CR too: it may come apart from the LF).
    buf = LineBuffer(300)
    buf.feed(b"x" * (300 + ENDLESS_MARGIN - 1) + b"\r\nnext\r\n")
    assert drain(buf) == [LINE_TOO_LONG, b"next"]
    buf = LineBuffer(300)
    buf.feed(b"x" * (300 + ENDLESS_MARGIN + 1) + b"\n")
    assert drain(buf) == [LINE_TOO_LONG, LINE_ENDLESS]


def test_a_line_of_the_limit_exactly_with_its_cr_apart_from_its_lf() -> None:
    buf = LineBuffer(10)
    buf.feed(b"x" * 10 + b"\r")
    assert drain(buf) == []
    buf.feed(b"\n")
    assert drain(buf) == [b"x" * 10]


@given(st.integers(0, 3 * ENDLESS_MARGIN), st.lists(st.integers(500, 70_000), min_size=1))
def test_long_lines_get_the_same_answers_whatever_the_chunking(
    length: int, sizes: list[int]
) -> None:
    data = b"y" * length + b"\r\nnext\r\n"
    whole = LineBuffer(300)
    whole.feed(data)
    expected = drain(whole)
    buf = LineBuffer(300)
    out: list[bytes | object] = []
    pos = i = 0
    while pos < len(data) and LINE_ENDLESS not in out:
        size = sizes[i % len(sizes)]
        buf.feed(data[pos : pos + size])
        pos += size
        i += 1
        out += drain(buf)
    if LINE_ENDLESS in expected:
        out = out[: out.index(LINE_ENDLESS) + 1]
        expected = expected[: expected.index(LINE_ENDLESS) + 1]
    assert out == expected
