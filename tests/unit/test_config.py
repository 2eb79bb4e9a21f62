from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from pop3d.config import Address, Config, ConfigError, build_config, load_config

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {"auth": {"passwd_file": "users"}, "maildir": {"path": "/srv/{user}/Maildir"}}


def test_the_issue_example(tmp_path: Path) -> None:
    (tmp_path / "pop3d.toml").write_text(
        '[server]\nlisten = ["127.0.0.1:1110"]\n[auth]\npasswd_file = "users.passwd"\n'
        '[maildir]\npath = "/srv/mail/{user}/Maildir"\n'
    )
    config = load_config(tmp_path / "pop3d.toml")
    assert config.server.listen == (Address("127.0.0.1", 1110),)
    assert config.passwd_file == tmp_path / "users.passwd"
    assert config.maildir_template == "/srv/mail/{user}/Maildir"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = build_config({"auth": {"passwd_file": "u"}, "maildir": {"path": "m/{user}"}}, tmp_path)
    assert config.passwd_file == tmp_path / "u"
    assert config.maildir_template == str(tmp_path / "m/{user}")
    config = build_config({**MINIMAL, "maildir": {"path": "{home}/Maildir"}}, tmp_path)
    assert config.maildir_template == "{home}/Maildir"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**MINIMAL, "sever": {}}, "unknown section [sever]"),
        ({**MINIMAL, "server": {"lisen": []}}, "unknown key 'lisen' in [server]"),
        ({**MINIMAL, "server": {"listen": "127.0.0.1:110"}}, "[server] listen: expected a list"),
        (
            {**MINIMAL, "server": {"listen": ["localhost"]}},
            "[server] listen: 'localhost' is not host:port",
        ),
        ({**MINIMAL, "server": {"listen": ["::1:110"]}}, "in brackets"),
        ({**MINIMAL, "server": {"listen": ["a:70000"]}}, "is not host:port"),
        (
            {**MINIMAL, "limits": {"idle_timeout_transaction": 60}},
            "idle_timeout_transaction: must be at least 600",
        ),
        ({**MINIMAL, "limits": {"max_line_length": 100}}, "max_line_length: must be at least 255"),
        ({**MINIMAL, "limits": {"max_line_length": "big"}}, "expected an integer"),
        ({**MINIMAL, "auth": {"passwd_file": "u", "apop": "yes"}}, "apop: expected true or false"),
        ({**MINIMAL, "server": {"log_level": "loud"}}, "must be one of"),
        ({"maildir": {"path": "/m/{user}"}}, "[auth] passwd_file is required"),
        ({"auth": {"passwd_file": "u"}}, "[maildir] path is required"),
        ({**MINIMAL, "maildir": {"path": "/m/{usr}"}}, "unknown placeholder {usr}"),
        ({**MINIMAL, "maildir": {"path": "/m/{user"}}, "[maildir] path:"),
        ({**MINIMAL, "server": []}, "[server] must be a table"),
        ({**MINIMAL, "auth": {"passwd_file": "u", "password_scheme": "MD5"}}, "must be one of"),
        ({**MINIMAL, "oauth2": {"jwks": "keys.json"}}, "[oauth2] issuer is required"),
        ({**MINIMAL, "oauth2": {"issuer": "https://idp"}}, "either jwks or introspection_url"),
        (
            {**MINIMAL, "oauth2": {"issuer": "i", "jwks": "k", "introspection_url": "https://x"}},
            "either jwks or introspection_url",
        ),
        (
            {**MINIMAL, "oauth2": {"issuer": "i", "jwks": "http://idp.example/certs"}},
            "[oauth2] jwks: 'http://idp.example/certs': an https URL is needed",
        ),
        (
            {**MINIMAL, "oauth2": {"issuer": "i", "introspection_url": "https://idp/introspect"}},
            "introspection_url needs client_id and client_secret_file",
        ),
        (
            {**MINIMAL, "auth": {"passwd_file": "u", "mechanisms": ["PLAIN", "XOAUTH2"]}},
            "[auth] mechanisms: XOAUTH2 needs an [oauth2] section",
        ),
        ({**MINIMAL, "oauth2": {"issuer": "i", "jwks": "k", "colck_skew": 1}}, "unknown key"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, Path("/etc/pop3d"))
    assert message in str(info.value)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_ipv6_and_several_listeners() -> None:
    config = build_config(
        {**MINIMAL, "server": {"listen": ["[::1]:1110", "0.0.0.0:110"]}}, Path("/")
    )
    assert config.server.listen == (Address("::1", 1110), Address("0.0.0.0", 110))
    assert str(config.server.listen[0]) == "[::1]:1110"


def test_every_key_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for section, hint in typing.get_type_hints(Config).items():
        assert f"[{section}]" in readme, section
        kind = next(a for a in (*typing.get_args(hint), hint) if dataclasses.is_dataclass(a))
        for key in dataclasses.fields(kind):
            assert re.search(rf"`{key.name}`", readme), (
                f"[{section}] {key.name} is not in the README"
            )


def test_oauth2_paths_and_urls(tmp_path: Path) -> None:
    config = build_config({**MINIMAL, "oauth2": {"issuer": "i", "jwks": "keys.json"}}, tmp_path)
    assert config.oauth2 is not None
    assert config.oauth2.jwks == str(tmp_path / "keys.json")
    assert config.oauth2.username_claim == "email"
    url = "http://127.0.0.1:8080/realms/mail/protocol/openid-connect/certs"
    config = build_config({**MINIMAL, "oauth2": {"issuer": "i", "jwks": url}}, tmp_path)
    assert config.oauth2 is not None
    assert config.oauth2.jwks == url  # http is allowed to this host only
    assert build_config(MINIMAL, tmp_path).oauth2 is None


def test_the_deprecated_log_level_is_still_the_level() -> None:
    assert build_config(MINIMAL, Path("/")).log_level == "info"
    assert build_config({**MINIMAL, "log": {"level": "error"}}, Path("/")).log_level == "error"
    old = build_config({**MINIMAL, "server": {"log_level": "debug"}}, Path("/"))
    assert old.log_level == "debug"
