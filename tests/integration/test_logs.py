"""Logs an operator can use: JSON lines, failed logins fail2ban reads (with Debian's
fail2ban-regex and the shipped filter), and no secret at any level."""

from __future__ import annotations

import base64
import hashlib
import json
import poplib
import re
import subprocess
from pathlib import Path

import pytest
import scramp

from tests.conftest import require_program
from tests.integration.conftest import ROOT, LineClient, ServerProcess, write_config
from tests.peers.idp import AUDIENCE, identity_provider

FILTER = ROOT / "contrib/fail2ban/filter.d/pop3d.conf"
# Names (sent with AUTH PLAIN, which allows any) that try to forge a second address into the
# line, or a whole second line.
FORGED = 'mallory" rip=10.9.9.9 x="'
NEWLINE = 'eve\n2026-01-01 00:00:00,000 INFO pop3d.session: auth failed: user="x" rip=10.8.8.8'


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def fail_logins(port: int) -> int:
    """Failed logins of several kinds from 127.0.0.1; how many."""
    failures = 0
    for user in ["bob", "unknown@example.org"]:
        client = LineClient(port)
        client.read_line()
        client.command(f"USER {user}")
        assert client.command("PASS wrong").startswith(b"-ERR [AUTH]")
        client.command("QUIT")
        failures += 1
    client = LineClient(port)
    client.read_line()
    for user in ["alice", FORGED, NEWLINE]:
        assert client.command(f"AUTH PLAIN {plain(user, 'wrong')}").startswith(b"-ERR [AUTH]")
        failures += 1
    return failures


@pytest.mark.parametrize("format", ["text", "json"])
def test_fail2ban_regex_matches_each_failed_login_and_nothing_else(
    tmp_path: Path, format: str
) -> None:
    fail2ban = require_program("fail2ban-regex")
    config = write_config(
        tmp_path, {"alice": "pw", "bob": "pw2"}, f'[log]\nformat = "{format}"\n',
        auth="failure_delay = 0\nmax_auth_failures = 10\n",
    )  # fmt: skip
    server = ServerProcess(config)
    try:
        failures = fail_logins(server.port)
        pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
        pop.user("alice")
        pop.pass_("pw")  # a success: matched by nothing
        pop.quit()
    finally:
        server.stop()
    log = tmp_path / "pop3d.log"
    log.write_text("".join(server.log))
    if format == "json":
        for line in log.read_text().splitlines():
            json.loads(line)  # every line is one JSON object
    result = subprocess.run(
        [fail2ban, "--out", "ip", str(log), str(FILTER)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["127.0.0.1"] * failures, result.stdout
    summary = subprocess.run(
        [fail2ban, str(log), str(FILTER)], capture_output=True, text=True, timeout=60
    ).stdout
    assert re.search(rf"Lines: \d+ lines, 0 ignored, {failures} matched", summary), summary


def test_a_failed_login_is_one_line_of_a_stable_shape(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alice": "pw"}, auth="failure_delay = 0\n")
    server = ServerProcess(config)
    try:
        client = LineClient(server.port)
        client.read_line()
        client.command(f"AUTH PLAIN {plain(FORGED, 'x')}")
        client.command(f"AUTH PLAIN {plain(NEWLINE, 'x')}")
    finally:
        server.stop()
    forged, newline = [ln for ln in server.log if "auth failed:" in ln]
    assert forged.endswith(
        ' auth failed: user="mallory\\" rip=10.9.9.9 x=\\"" rip=127.0.0.1 mechanism=PLAIN '
        "reason=credentials delay=0.0s\n"
    ), forged
    assert ' auth failed: user="eve\\x0a2026-01-01 ' in newline, newline
    assert newline.count("\n") == 1


def test_json_lines_carry_the_session_and_its_fields(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alice": "pw"}, '[log]\nformat = "json"\n')
    server = ServerProcess(config)
    try:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
        pop.user("alice")
        pop.pass_("pw")
        pop.quit()
    finally:
        server.stop()
    entries = [json.loads(line) for line in server.log]
    login = next(e for e in entries if e.get("event") == "login")
    assert set(login) == {"time", "level", "event", "session", "peer", "user", "mechanism",
                          "messages"}  # fmt: skip
    assert (login["user"], login["mechanism"], login["level"]) == ("alice", "USER", "info")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", login["time"])
    logout = next(e for e in entries if e.get("event") == "logout")
    assert logout["session"] == login["session"]
    assert logout["reason"] == "quit"
    other = next(e for e in entries if "event" not in e)
    assert set(other) >= {"time", "level", "logger", "message"}


def test_no_password_token_or_sasl_payload_at_debug(tmp_path: Path) -> None:
    """Every way to log in, right and wrong, with [log] level = debug: none of what the
    client sent to prove who it is appears in the log, nor any stored hash."""
    passwords = {"alice": "alice's secret", "bob": "Bob-Passw0rd!"}
    with identity_provider(tmp_path / "idp") as (provider, ca_file):
        provider.add_key("rsa")
        token = provider.token("alice", preferred_username="alice")
        bad_token = provider.token("alice", exp=1)
        (tmp_path / "srv").mkdir()
        config = write_config(
            tmp_path / "srv", passwords,
            '[log]\nlevel = "debug"\n'
            f'[oauth2]\nissuer = "{provider.issuer}"\njwks = "{provider.jwks_url}"\n'
            f'audience = "{AUDIENCE}"\nusername_claim = "preferred_username"\n'
            f'ca_file = "{ca_file}"\n',
            auth="apop = true\nfailure_delay = 0\nmax_auth_failures = 20\n",
        )  # fmt: skip
        server = ServerProcess(config)
        secrets: list[str] = [*passwords.values(), token, bad_token, "wrong password"]
        try:
            for user, password in [("alice", passwords["alice"]), ("bob", "wrong password")]:
                client = LineClient(server.port)
                client.read_line()
                client.command(f"USER {user}")
                client.command(f"PASS {password}")
                client.command("QUIT")
            client = LineClient(server.port)
            challenge = re.search(r"<[^>]+>", client.read_line().decode())
            assert challenge
            digest = hashlib.md5((challenge.group() + passwords["bob"]).encode()).hexdigest()
            secrets.append(digest)
            assert client.command(f"APOP bob {digest}").startswith(b"+OK")
            client.command("QUIT")
            for payload in [b"\0alice\0" + passwords["alice"].encode(), b"\0bob\0wrong password"]:
                one = LineClient(server.port)
                one.read_line()
                encoded = base64.b64encode(payload).decode()
                secrets.append(encoded)
                one.command(f"AUTH PLAIN {encoded}")
                one.command("QUIT")
            login = LineClient(server.port)
            login.read_line()
            login.command("AUTH LOGIN")
            login.command(base64.b64encode(b"bob").decode())
            encoded = base64.b64encode(passwords["bob"].encode()).decode()
            secrets.append(encoded)
            assert login.command(encoded).startswith(b"+OK")
            login.command("QUIT")
            scram = scramp.ScramClient(["SCRAM-SHA-256"], "alice", passwords["alice"])
            sasl = LineClient(server.port)
            sasl.read_line()
            first = base64.b64encode(scram.get_client_first().encode()).decode()
            reply = sasl.command(f"AUTH SCRAM-SHA-256 {first}")
            scram.set_server_first(base64.b64decode(reply[2:]).decode())
            final = scram.get_client_final()
            secrets += [final.rsplit("p=", 1)[1], base64.b64encode(final.encode()).decode()]
            scram.set_server_final(base64.b64decode(sasl.command(
                base64.b64encode(final.encode()).decode())[2:]).decode())  # fmt: skip
            assert sasl.command("").startswith(b"+OK")
            sasl.command("QUIT")
            for mechanism, message in [
                ("OAUTHBEARER", f"n,a=alice,\x01auth=Bearer {token}\x01\x01"),
                ("XOAUTH2", f"user=alice\x01auth=Bearer {bad_token}\x01\x01"),
            ]:
                bearer = LineClient(server.port)
                bearer.read_line()
                encoded = base64.b64encode(message.encode()).decode()
                secrets.append(encoded)
                if bearer.command(f"AUTH {mechanism} {encoded}").startswith(b"+ "):
                    assert bearer.command("").startswith(b"-ERR [AUTH]")  # XOAUTH2's ack
        finally:
            server.stop()
    log = "".join(server.log)
    assert "DEBUG" in log  # the level took
    for mechanism in ("USER", "APOP", "PLAIN", "LOGIN", "SCRAM-SHA-256", "OAUTHBEARER",
                      "XOAUTH2"):  # fmt: skip
        assert f"mechanism={mechanism}" in log, mechanism
    for secret in secrets:
        assert secret not in log, secret[:20]
    stored = (tmp_path / "srv/users.passwd").read_text()
    for line in stored.splitlines():
        assert line.split(":")[1] not in log


def test_the_old_log_level_key_still_works_with_a_warning(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alice": "pw"}, server='log_level = "debug"\n')
    server = ServerProcess(config)
    server.stop()
    log = "".join(server.log)
    assert "WARNING pop3d: [server] log_level is deprecated and will go: use [log] level" in log
