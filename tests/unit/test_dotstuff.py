from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pop3d.protocol import dotstuff
from pop3d.protocol.dotstuff import (
    DOT_SCAN_LIMIT,
    CMessageEncoder,
    Encoder,
    LineEndNormalizer,
    MessageEncoder,
    message_encoder,
    unstuff,
    wire_size,
)
from tests.conftest import not_here

C_BUILT = dotstuff._c_encode is not None


@pytest.fixture(scope="module", params=["python", "c"])
def make(request: pytest.FixtureRequest) -> type[Encoder]:
    """Each test of RETR's encoding runs on both encoders; TOP has only the Python one."""
    if request.param == "python":
        return MessageEncoder
    if not C_BUILT:
        not_here("the C encoder was not built (no C compiler or Python headers)")
    return CMessageEncoder


def encode(data: bytes, chunk: int, body_lines: int | None = None) -> bytes:
    return encode_with(MessageEncoder(body_lines), data, chunk)


def encode_with(enc: Encoder, data: bytes, chunk: int) -> bytes:
    out = [enc.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(out) + enc.finish()


def normalize(data: bytes) -> bytes:
    n = LineEndNormalizer()
    return n.feed(data) + n.finish()


# Messages made of the awkward parts: dots, CRs, LFs, CRLFs, ordinary text.
messages = st.lists(
    st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"a", b"text", b" ", b"\r\r\n", b"\xff"]),
    max_size=60,
).map(b"".join)


@given(messages, st.integers(1, 17))
def test_unstuffing_what_we_stuffed_gives_the_message_back(data: bytes, chunk: int) -> None:
    body = encode(data, chunk)
    expected = normalize(data)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert unstuff(body) == expected


@given(messages, st.integers(1, 17))
def test_output_does_not_depend_on_chunking(data: bytes, chunk: int) -> None:
    assert encode(data, chunk) == encode(data, len(data) or 1)


@given(messages, st.integers(1, 17))
def test_wire_size_is_what_retr_sends_before_stuffing(data: bytes, chunk: int) -> None:
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    assert wire_size(pieces) == len(unstuff(encode(data, chunk)))


@given(messages, st.integers(1, 17))
def test_body_is_well_framed(data: bytes, chunk: int) -> None:
    body = encode(data, chunk)
    assert body.endswith(b".\r\n")
    content = body[:-3]
    assert content == b"" or content.endswith(b"\r\n")
    lines = content.split(b"\r\n")[:-1]
    # No line is a lone dot, and every line that starts with a dot was stuffed.
    assert all(line != b"." for line in lines)
    assert b"\n" not in content.replace(b"\r\n", b"")


header_lines = st.lists(st.text("abcXY: ", min_size=1, max_size=10).map(str.encode), max_size=5)
body_lines = st.lists(st.sampled_from([b"", b".", b"..x", b"body", b"\r"]), max_size=10)


@given(header_lines, body_lines, st.integers(0, 12), st.integers(1, 9), st.booleans())
def test_top_sends_exactly_n_body_lines(
    header: list[bytes], body: list[bytes], n: int, chunk: int, crlf: bool
) -> None:
    eol = b"\r\n" if crlf else b"\n"
    message = b"".join(h + eol for h in header) + eol + b"".join(b + eol for b in body)
    out = unstuff(encode(message, chunk, n))
    expected_body = b"".join(normalize(b + eol) for b in body[:n])
    assert out == b"".join(h + b"\r\n" for h in header) + b"\r\n" + expected_body


def test_crlf_files_are_not_doubled(make: type[Encoder]) -> None:
    assert encode_with(make(), b"a\r\nb\r\n", 1) == b"a\r\nb\r\n.\r\n"


def test_dot_after_a_chunk_boundary_is_stuffed(make: type[Encoder]) -> None:
    enc = make()
    assert enc.feed(b"a\r") == b"a"
    assert enc.feed(b"\n.b\n") == b"\r\n..b\r\n"
    assert enc.finish() == b".\r\n"


def test_dot_at_the_start_of_a_chunk_after_a_line_end_is_stuffed(make: type[Encoder]) -> None:
    enc = make()
    assert enc.feed(b"a\n") == b"a\r\n"
    assert enc.feed(b".\n") == b"..\r\n"


@pytest.mark.parametrize(
    ("stored", "body"),
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),  # a CR ending the message ends its line
        (b"a\rb", b"a\rb\r\n.\r\n"),  # a CR inside a line stays
        (b"a\r\r\n", b"a\r\r\n.\r\n"),
        (b".\n..\n", b"..\r\n...\r\n.\r\n"),
        (b"\r.\n", b"\r.\r\n.\r\n"),  # after a lone CR a dot does not begin a line
        (b"\n\n.", b"\r\n\r\n..\r\n.\r\n"),
    ],
)
def test_whole_message_exact_bytes(make: type[Encoder], stored: bytes, body: bytes) -> None:
    assert make().whole(b"+OK 9 octets\r\n", stored) == b"+OK 9 octets\r\n" + body
    assert encode_with(make(), stored, 1) == body


@given(messages, st.integers(1, 17))
def test_the_c_encoder_matches_the_python_one(data: bytes, chunk: int) -> None:
    if not C_BUILT:
        not_here("the C encoder was not built (no C compiler or Python headers)")
    assert encode_with(CMessageEncoder(), data, chunk) == encode(data, chunk)
    assert CMessageEncoder().whole(b"+OK\r\n", data) == b"+OK\r\n" + encode(data, chunk)
    assert CMessageEncoder().whole(b"", bytearray(data)) == encode(data, chunk)


def test_retr_gets_the_c_encoder_where_it_was_built() -> None:
    assert isinstance(message_encoder(), CMessageEncoder if C_BUILT else MessageEncoder)
    assert isinstance(message_encoder(3), MessageEncoder)  # TOP counts lines in Python


def test_top_stops_reading() -> None:
    enc = MessageEncoder(1)
    assert enc.feed(b"H: v\n\nl1\nl2\n") == b"H: v\r\n\r\nl1\r\n"
    assert enc.done
    assert enc.feed(b"more") == b""
    assert enc.finish() == b".\r\n"


def test_blank_line_found_across_chunks() -> None:
    out = encode(b"H: v\r\n\r\nbody\r\nmore\r\n", 1, 1)
    assert out == b"H: v\r\n\r\nbody\r\n.\r\n"


def test_unstuff_refuses_an_unterminated_body() -> None:
    with pytest.raises(ValueError):
        unstuff(b"abc\r\n")


# Long texts where dots are common: past DOT_SCAN_LIMIT, stuffing switches to one replace.
dotty = st.lists(
    st.sampled_from([b".", b"\n.", b"\n..\n", b"a.b", b"\n", b"\r\n", b"x"]), max_size=400
).map(b"".join)


@given(dotty, st.sampled_from([1, 7, 64, 4096]))
def test_stuffing_matches_the_rule_however_many_dots(
    make: type[Encoder], data: bytes, chunk: int
) -> None:
    lines = normalize(data)
    if lines and not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    expected = (b"\r\n" + lines).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"
    assert encode_with(make(), data, chunk) == expected


@given(dotty)
def test_a_bytearray_encodes_as_its_bytes_do(make: type[Encoder], data: bytes) -> None:
    enc = make()
    out = bytes(enc.feed(bytearray(data))) + enc.finish()
    assert out == encode(data, len(data) or 1)


def test_many_dots_in_one_chunk_are_all_stuffed(make: type[Encoder]) -> None:
    data = b"".join(b"line %d.\n.dot\n" % i for i in range(DOT_SCAN_LIMIT * 2))
    encoded = encode_with(make(), data, len(data))
    assert encoded.count(b"\r\n..dot\r\n") == DOT_SCAN_LIMIT * 2


def test_a_large_message_encodes_exactly(make: type[Encoder]) -> None:
    # Large enough that the C encoder counts before it allocates, and of every kind of line.
    data = b"\n" * 100_000 + b".\n" * 1000 + b"a\r\n.b\rc\n" * 10_000 + b"\r"
    expected = b"\r\n" * 100_000 + b"..\r\n" * 1000 + b"a\r\n..b\rc\r\n" * 10_000 + b"\r\n.\r\n"
    assert make().whole(b"+OK\r\n", data) == b"+OK\r\n" + expected
    assert encode_with(make(), data, 65_536) == expected
