"""Transcripts in the RFC's notation: `C: ` lines the client sends, `S: ` lines the server sends.

Lines starting with `#` and blank lines are ignored; `S: ` lines of a multi-line reply follow
each other. `\\t` in a line stands for a tab, `<SP>` at the end for a trailing space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRANSCRIPTS = Path(__file__).parent / "transcripts"


@dataclass(frozen=True)
class Transcript:
    client: bytes
    server: bytes
    steps: tuple[tuple[bytes, bytes], ...]  # (client line, server reply) in order


def _line(text: str) -> bytes:
    return text.replace("<SP>", " ").replace("\\t", "\t").encode("utf-8") + b"\r\n"


def parse(text: str) -> Transcript:
    steps: list[tuple[bytes, bytes]] = []
    client, server = b"", b""
    for raw in text.splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        who, sep, rest = raw.partition(": ")
        if not sep and raw in ("C:", "S:"):
            who, rest = raw[:1], ""
        elif who not in ("C", "S"):
            raise ValueError(f"not a transcript line: {raw!r}")
        data = _line(rest)
        if who == "C":
            steps.append((data, b""))
            client += data
        else:
            if not steps:
                steps.append((b"", b""))
            line, reply = steps[-1]
            steps[-1] = (line, reply + data)
            server += data
    return Transcript(client, server, tuple(steps))


def load(name: str) -> Transcript:
    return parse((TRANSCRIPTS / name).read_text(encoding="utf-8"))
