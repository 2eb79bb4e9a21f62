"""Logs: one line per event on stderr, as text or as JSON ([log] format).

An event of a session is logged with `event()`: a name and fields. In text it reads
`session=7 peer=192.0.2.1:40000 auth failed: user="bob" rip=192.0.2.1 mechanism=PLAIN`, each
value quoted and escaped when it needs it, so no value (a user name as the client sent it)
can forge a line or a field; as JSON it is one object with `time`, `level`, `event`,
`session`, `peer` and the fields. Other records carry `logger` and `message`. Passwords,
tokens and SASL payloads are never fields.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import Any

_PLAIN = re.compile(r"[\w.@:/+\[\]-]+")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]|[^\x00-\x7f]')


def quote(value: object, always: bool = False) -> str:
    """`value` as a field value of a text line: bare when it is a plain word (unless
    `always`), else in double quotes with `"`, `\\`, control characters and non-ASCII
    escaped."""
    text = str(value)
    if not always and _PLAIN.fullmatch(text):
        return text
    escaped = _UNSAFE.sub(lambda m: _escape(m.group()), text)
    return f'"{escaped}"'


def _escape(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else (f"\\U{code:08x}")
    )


def event(
    logger: logging.Logger, level: int, name: str, *, session: int, peer: str, **fields: Any
) -> None:
    """Log a session's event `name` (a colon ends a name that fail2ban matches on)."""
    if not logger.isEnabledFor(level):
        return
    shown = {k: v for k, v in fields.items() if v is not None}
    # A user name is the client's to choose: always quoted, so its shape never varies.
    text = " ".join(f"{k}={quote(v, k == 'user')}" for k, v in shown.items())
    logger.log(
        level,
        "session=%d peer=%s %s%s",
        session, peer, name, " " + text if text else "",
        extra={"pop3d_event": {"event": name.rstrip(":"), "session": session, "peer": peer,
                               **shown}},
    )  # fmt: skip


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
        }
        fields = getattr(record, "pop3d_event", None)
        if fields is not None:
            entry.update(fields)
        else:
            entry["logger"] = record.name
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup(format: str, level: str, process_id: bool = False) -> None:
    """Log to stderr (journald and container runtimes take it as it is)."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        pid = "[%(process)d]" if process_id else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
