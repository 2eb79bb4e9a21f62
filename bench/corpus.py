"""A deterministic corpus of realistic Maildirs, and what each message must look like on
the wire, so the load generator can check every download.

Messages are MIME: a text part with wrapped lines (some starting with a dot, the odd line of
over 1000 characters, a line that is only a dot), often an HTML alternative, and attachments
in base64; sizes follow a log-normal distribution with a median near 20 KB. Files are written
as Postfix writes them: LF line ends, names `time.VdevIinodeMusec.host` without size fields,
so every server has to read and measure them (each warms its own cache or index first).
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

WORDS = (  # noqa: SIM905 - a word list reads better as text
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no what up out about who get into time more can like than other some could them "
    "mail server message delivery mailbox client protocol retrieve network folder invoice"
).split()


@dataclass(frozen=True)
class Expected:
    """A message as POP3 delivers it: CRLF line ends, before byte-stuffing."""

    size: int
    crc: int


def wire_form(stored: bytes) -> bytes:
    return stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _paragraphs(rng: random.Random, count: int) -> list[str]:
    lines: list[str] = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 120))]
        line = ""
        for word in words:
            if len(line) + len(word) > 72:
                lines.append(line)
                line = ""
            line = f"{line} {word}" if line else word
        lines.append(line)
        roll = rng.random()
        if roll < 0.15:
            lines.append("." + rng.choice(WORDS) + " starts with a dot")
        elif roll < 0.2:
            lines.append(".")
        elif roll < 0.25:
            lines.append(" ".join(rng.choice(WORDS) for _ in range(250)))  # > 1000 chars
        lines.append("")
    return lines


def make_message(rng: random.Random, index: int, user: str, target: int) -> bytes:
    boundary = f"=_boundary_{index}_{rng.randrange(1 << 30)}"
    date = f"Tue, {1 + index % 28:02d} Dec 2026 10:{index % 60:02d}:00 +0000"
    head = [
        "Return-Path: <sender@example.net>",
        f"Delivered-To: {user}@example.org",
        "Received: from mx.example.net (mx.example.net [192.0.2.1])",
        f"\tby mail.example.org (Postfix) with ESMTPS id {index:08X}",
        f"\tfor <{user}@example.org>; {date}",
        "From: Sender <sender@example.net>",
        f"To: {user} <{user}@example.org>",
        f"Subject: message {index}: {' '.join(rng.choice(WORDS) for _ in range(5))}",
        f"Date: {date}",
        f"Message-ID: <{index}.{rng.randrange(1 << 40)}@example.net>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        "This is a multi-part message in MIME format.",
        "",
    ]
    text = _paragraphs(rng, rng.randint(2, 8))
    parts = ["--" + boundary, "Content-Type: text/plain; charset=utf-8", "", *text]
    if rng.random() < 0.5:
        html = (
            "<html><body>" + "".join(f"<p>{line}</p>" for line in text if line) + "</body></html>"
        )
        parts += ["--" + boundary, "Content-Type: text/html; charset=utf-8", "", html, ""]
    body = "\n".join(head + parts)
    remaining = target - len(body)
    if remaining > 200:
        blob = base64.encodebytes(rng.randbytes(remaining * 3 // 4)).decode()
        body += "\n".join(
            [
                "",
                "--" + boundary,
                "Content-Type: application/octet-stream",
                "Content-Transfer-Encoding: base64",
                f'Content-Disposition: attachment; filename="file{index}.bin"',
                "",
                blob,
            ]
        )
    body += f"\n--{boundary}--\n"
    return body.encode()


def _deliver(maildir: Path, index: int, data: bytes) -> None:
    name = f"{1700000000 + index}.V801I{index:x}M{index % 1000000:06d}.bench.example.org"
    (maildir / "new" / name).write_bytes(data)


def _make_maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Corpus:
    root: Path
    users: list[str]  # full-session users
    idle_users: list[str]  # one small message each
    bulk_user: str
    passwords: dict[str, str]
    expected: dict[str, list[Expected]]  # by user, in no particular order

    @property
    def passwd(self) -> Path:
        return self.root / "users.passwd"

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    @property
    def mail_template(self) -> str:
        return str(self.root / "mail" / "{user}" / "Maildir")


def build(
    root: Path, users: int, messages: int, idle_users: int, bulk_mb: int, seed: int = 1
) -> Corpus:
    """Write the corpus under `root` (reused when it was built with the same parameters)."""
    params = {
        "users": users,
        "messages": messages,
        "idle": idle_users,
        "bulk": bulk_mb,
        "seed": seed,
    }
    manifest = root / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text())["params"] == params:
        return _load(root, json.loads(manifest.read_text()))
    rng = random.Random(seed)
    names = [f"user{i:04d}" for i in range(users)]
    idle = [f"idle{i:05d}" for i in range(idle_users)]
    passwords = {name: f"pw-{name}" for name in [*names, *idle, "bulk"]}
    expected: dict[str, list[Expected]] = {}
    for name in names:
        maildir = _make_maildir(root / "mail" / name / "Maildir")
        expected[name] = []
        for i in range(messages):
            size = int(min(max(rng.lognormvariate(9.9, 0.9), 2_000), 2_000_000))  # median ~20 KB
            data = make_message(rng, i, name, size)
            _deliver(maildir, i, data)
            wire = wire_form(data)
            expected[name].append(Expected(len(wire), zlib.crc32(wire)))
    small = make_message(rng, 0, "idle", 1500)
    for name in idle:
        _deliver(_make_maildir(root / "mail" / name / "Maildir"), 0, small)
        wire = wire_form(small)
        expected[name] = [Expected(len(wire), zlib.crc32(wire))]
    bulk_dir = _make_maildir(root / "mail" / "bulk" / "Maildir")
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123\n"
    big = b"Subject: bulk\nFrom: <a@example.net>\n\n" + line * (bulk_mb * 1_000_000 // len(line))
    _deliver(bulk_dir, 0, big)
    expected["bulk"] = [Expected(len(big) + big.count(b"\n"), zlib.crc32(wire_form(big)))]
    (root / "users.passwd").write_text(
        "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in passwords.items())
    )
    manifest.write_text(
        json.dumps(
            {
                "params": params,
                "users": names,
                "idle": idle,
                "passwords": passwords,
                "expected": {u: [[e.size, e.crc] for e in v] for u, v in expected.items()},
            }
        )
    )
    return _load(root, json.loads(manifest.read_text()))


def _load(root: Path, data: dict[str, object]) -> Corpus:
    expected_raw = data["expected"]
    assert isinstance(expected_raw, dict)
    return Corpus(
        root,
        list(data["users"]),  # type: ignore[call-overload]
        list(data["idle"]),  # type: ignore[call-overload]
        "bulk",
        dict(data["passwords"]),  # type: ignore[call-overload]
        {u: [Expected(s, c) for s, c in v] for u, v in expected_raw.items()},
    )


def chown_all(root: Path, owner: str) -> None:
    """Hand the corpus to the user a peer server reads mail as (Dovecot: nobody)."""
    subprocess.run(["chown", "-R", owner, str(root)], check=True)
