"""A real pop3d for other programs' tests: a server on 127.0.0.1, in a thread of its own.

    with ServerThread.in_directory(tmp_path, users={"alice": "secret"}) as server:
        server.deliver("alice", b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
        pop = poplib.POP3("127.0.0.1", server.port)

Users get `{PLAIN}` passwords unless a full `{SCHEME}...` field is given. Failed logins are
answered at once (`failure_delay = 0`) and `stop()` cuts sessions off after one second
(`shutdown_timeout = 1`), unless the config given says otherwise. The event loop is uvloop when
installed, or what `POP3D_TEST_EVENT_LOOP` (asyncio, uvloop, auto) says.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .backends import mail_store
from .config import Config, build_config
from .principal import Principal
from .quota import Quota
from .server import Pop3Server
from .store.maildir import MaildirStore, deliver


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for section, values in extra.items():
        merged.setdefault(section, {}).update(values)
    return merged


class ServerThread:
    def __init__(self, config: Config, **server_options: Any) -> None:
        self.config = config
        self._server_options = server_options
        self.server: Pop3Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def in_directory(
        cls,
        root: Path,
        users: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        **server_options: Any,
    ) -> ServerThread:
        """A server whose passwd-file and Maildirs live under `root`, listening on a free port."""
        root.mkdir(parents=True, exist_ok=True)
        passwd = root / "users.passwd"
        lines = [
            f"{name}:{pw if pw.startswith('{') else '{PLAIN}' + pw}::::::\n"
            for name, pw in (users or {}).items()
        ]
        passwd.write_text("".join(lines))
        data = _merge(
            {
                "server": {
                    "listen": ["127.0.0.1:0"],
                    "shutdown_timeout": 1,
                    "event_loop": os.environ.get("POP3D_TEST_EVENT_LOOP", "auto"),
                },
                "auth": {"passwd_file": "users.passwd", "failure_delay": 0},
                "maildir": {"path": "mail/{user}/Maildir"},
            },
            config or {},
        )
        return cls(build_config(data, root), **server_options)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def tls_port(self) -> int:
        assert self.server is not None
        return self.server.tls_port

    @property
    def lmtp_port(self) -> int:
        assert self.server is not None
        return int(self.server.lmtp_addresses[0][1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self.server is not None
        return self.server.addresses

    def maildir(self, user: str) -> Path:
        return MaildirStore(self.config.maildir_template).path_for(Principal(user))

    def deliver(self, user: str, message: bytes) -> str:
        """Into the user's Maildir (its file name), or the store the config names."""
        if self.config.store.backend == "maildir":
            return deliver(self.maildir(user), [message])
        return mail_store(self.config, None).deliver(Principal(user), [message], Quota())

    def start(self) -> ServerThread:
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.result(timeout=30)
        return self

    def _run(self, started: Future[None]) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            try:
                self.server = Pop3Server(self.config, **self._server_options)
                await self.server.start()
            except Exception as exc:  # noqa: BLE001 - handed to the thread that waits
                started.set_exception(exc)
                return
            started.set_result(None)
            await self.server.serve_forever()

        if self.config.server.event_loop != "asyncio":
            try:
                import uvloop  # noqa: PLC0415 - optional
            except ImportError:
                if self.config.server.event_loop == "uvloop":
                    raise
            else:
                uvloop.run(main())
                return
        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None and self.server is not None:
            self._loop.call_soon_threadsafe(self.server.request_stop)
        if self._thread is not None:
            self._thread.join(timeout=60)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
