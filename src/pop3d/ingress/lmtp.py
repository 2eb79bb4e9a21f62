"""The LMTP listener (RFC 2033) on aiosmtpd, delivering into the users' Maildirs.

aiosmtpd speaks the protocol; this module supplies what LMTP needs beyond SMTP: recipients
checked at RCPT, one reply per accepted recipient after DATA (each sent only once that copy
is on disk), enhanced status codes (RFC 2034) in the replies and in LHLO, and a
per-recipient answer when the message is refused as a whole (too big). Delivery itself is
`Deliverer`'s, run on the I/O thread pool. aiosmtpd keeps a message in memory while it
arrives, so `max_message_size` also bounds what one LMTP client can make us hold.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from ..config import Config
from .delivery import Deliverer, Outcome, Recipient

if TYPE_CHECKING:
    from ..server.metrics import Metrics

log = logging.getLogger("pop3d.lmtp")

MAX_RECIPIENTS = 1000


class LmtpHandler:
    """aiosmtpd's handler hooks."""

    def __init__(
        self, deliverer: Callable[[], Deliverer], executor: Executor | None, metrics: Metrics
    ) -> None:
        self._deliverer = deliverer
        self._executor = executor
        self._metrics = metrics

    @property
    def deliverer(self) -> Deliverer:
        return self._deliverer()

    async def _blocking(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        extensions = [r for r in responses[1:-1] if not r.startswith("250-AUTH")]
        return [responses[0], *extensions, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        recipient: Recipient | Outcome = await self._blocking(self.deliverer.recipient, address)
        if isinstance(recipient, Outcome):
            return recipient.reply(address)
        refusal: Outcome | None = await self._blocking(self.deliverer.over_quota, recipient, 0)
        if refusal is not None:
            return refusal.reply(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        replies = []
        for address in envelope.rcpt_tos:
            outcome = await self._blocking(self._deliver, envelope, address, content)
            log.info(
                "lmtp from=<%s> to=<%s> size=%d outcome=%s",
                envelope.mail_from, address, len(content), outcome.name,
            )  # fmt: skip
            self._metrics.lmtp_deliveries.labels(outcome.name.lower()).inc()
            replies.append(outcome.reply(address))
        # RFC 2033 section 4.2: one reply per accepted recipient, in RCPT order.
        return "\r\n".join(replies)

    def _deliver(self, envelope: Envelope, address: str, content: bytes) -> Outcome:
        # Resolved again: a user removed since RCPT is unknown now, not delivered to.
        recipient = self.deliverer.recipient(address)
        if isinstance(recipient, Outcome):
            return recipient
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from  # <> bounces
        trace = f"Return-Path: <{sender}>\r\nDelivered-To: {address}\r\n"
        return self.deliverer.deliver(
            recipient, [trace.encode("utf-8", "surrogateescape"), content]
        )

    async def handle_RSET(self, server: Any, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK"

    async def handle_NOOP(self, server: Any, session: Session, envelope: Envelope, arg: str) -> str:
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: Any, session: Session, envelope: Envelope) -> str:
        return "221 2.0.0 Bye"


class Pop3dLmtp(LMTP):
    """aiosmtpd's LMTP, with its whole-message refusals answered once per recipient."""

    # RFC 5321's 1000 octets refuses real mail (HTML on one line); Postfix itself passes lines
    # up to its 2048-octet line_length_limit. 64 KiB still bounds what a line can hold.
    line_length_limit = 65536

    async def push(self, status: Any) -> None:
        text = status if isinstance(status, str) else ""
        recipients = self.envelope.rcpt_tos if self.envelope else []
        if recipients and text.startswith(("552 Error: Too much mail data", "500 Line too long")):
            code = "552 5.3.4" if text.startswith("552") else "500 5.5.2"
            status = "\r\n".join(f"{code} <{r}> Message refused: {text[4:]}" for r in recipients)
        await super().push(status)


async def start_lmtp(
    sockets: list[socket.socket],
    deliverer: Callable[[], Deliverer],
    config: Config,
    executor: Executor | None,
    metrics: Metrics,
) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    handler = LmtpHandler(deliverer, executor, metrics)
    limit = config.delivery.max_message_size
    hostname = socket.getfqdn()

    def factory() -> Pop3dLmtp:
        return Pop3dLmtp(
            handler,
            data_size_limit=limit,
            enable_SMTPUTF8=True,
            ident="LMTP ready",  # not aiosmtpd's "Python SMTP <version>": no software banner
            hostname=hostname,
            loop=loop,
        )

    servers = []
    for sock in sockets:
        if sock.family == socket.AF_UNIX:
            servers.append(await loop.create_unix_server(factory, sock=sock))
        else:
            servers.append(await loop.create_server(factory, sock=sock))
    return servers
