"""Password schemes, checked against values `doveadm pw` wrote for the password "pass word"."""

from __future__ import annotations

import subprocess

import pytest

from pop3d.auth.schemes import (
    NEW_HASHES,
    StoredPassword,
    UnknownScheme,
    hash_argon2id,
    hash_password,
)
from tests.conftest import require_program

DOVEADM = {
    "ARGON2ID": "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$ErrsfpAp87BwAWHZZ2bNVQ$bQhCvDjI4XyW6stMWsYp/0kXlCx7dg7/Sj3v4K1RhoA",
    "ARGON2I": "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$fLsoqGKDNYPeEM6fvVmiuw$B7z0O/W+qJ2k0hj1JkV3elVWSFUGaYcwtEhEqjNKEkQ",
    "BLF-CRYPT": "{BLF-CRYPT}$2y$05$ho.kL4m07Yes5aEj5t03d.7eFO12D5fmCHhF8.aNDoxiNld6QXQf.",
    "SHA512-CRYPT": "{SHA512-CRYPT}$6$29VtC6GC1sCwkoVI$V3kuqMfanagJtojNUtFbS2K3m7NC/sz2fXEjz6rwWShAGx/Q.1a6OHCkl9dxskG.8FoYWTuLog.7rL1AyG/XS1",
    "SHA256-CRYPT": "{SHA256-CRYPT}$5$zjc9zV1c1JQJPpsm$DGgTbZOW4.4KVDnBPyHDQUE3FO.XaxU/8SEJcl4jve6",
    "MD5-CRYPT": "{MD5-CRYPT}$1$cvICgC5D$vsSvt1.3b25gM780kC9Xw1",
    "SSHA512": "{SSHA512}g+55RuEoyIYh1xFzO/uV8fKSbvtLdqr270kGf6rs4CJCLSVxrGk8iYyuLwqWUVpTn+TXWnnNm2RCIxfXq/VEHYeZTHA=",
    "SSHA256": "{SSHA256}Vk3UgUf7oDlGssY5Ik2AuOqTHbLTuUiaIZGFawp4HjG27zL/",
    "SSHA": "{SSHA}8dXClwDc/9FzL33a3RbC1TV7C2yoqPvX",
    "SHA512": "{SHA512}Nq7XWhQpjD4VwA82iHbXmY8NSz1w7/A84XtT9npPaxW+U8Dt41vjbL2JY3A7kd5cgXmFPhhROfO9ihvprNn13A==",
    "SHA256": "{SHA256}eJgOJX9BJDf7+TQ3h7wA7FsQY2QpvAALKQEHM1sIl4Y=",
    "SHA": "{SHA}2oguq15ANCGsJCWKX31fllwpyEk=",
    "PLAIN": "{PLAIN}pass word",
    "CLEARTEXT": "{CLEARTEXT}pass word",
    "PLAIN-MD5": "{PLAIN-MD5}4ac6430a17d0215b3052b15c879d48bc",
    "LDAP-MD5": "{LDAP-MD5}SsZDChfQIVswUrFch51IvA==",
    "SMD5": "{SMD5}Q/lAlKJemUGufW7qYDDZ8zqRunA=",
    "SCRAM-SHA-256": "{SCRAM-SHA-256}4096,+6XIDjeUvCZ30JHgujkgPg==,5JvfHid26Oz455FM38aoovuj+AKFdyCCYZ4R2xmW0dk=,1BzCjR6lpOOCcJz1kkjkhFbVwPM4xtD4aeufdqMYSdQ=",
    "SCRAM-SHA-1": "{SCRAM-SHA-1}4096,ZutrlMTD0g/jcj6IOAf9SQ==,9RvMmf2w2yjbXt3NABD3d3W07Uw=,gCkOFEJZOxo6+omRTD/85I2J0UY=",
    "CRYPT": "{CRYPT}$2y$05$Q7edNFv4Iu71TmOeLSDNSuNXK9NXxHu148/X5xv.W.Olg3ljX3zsO",
}


@pytest.mark.parametrize("scheme", sorted(DOVEADM))
def test_doveadm_values_verify(scheme: str) -> None:
    stored = StoredPassword.parse(DOVEADM[scheme])
    assert stored.verify(b"pass word")
    assert not stored.verify(b"pass word!")
    assert not stored.verify(b"")


def test_hex_encoded_digests() -> None:
    # doveadm pw -s SSHA512.HEX -p x
    stored = StoredPassword.parse(
        "{SSHA512.HEX}1579fc3a1aaed616b18545e50160b6c6ec46a1100d9cc9e6c17de0bb67d8acea2c9b4c04"
        "f93d92318d71c7593ed2c21f240565a6c263b5637ad24180737979cc469e5655"
    )
    assert stored.verify(b"x")
    assert not stored.verify(b"y")


def test_a_field_without_scheme_is_crypt() -> None:
    assert StoredPassword.parse("$1$cvICgC5D$vsSvt1.3b25gM780kC9Xw1").verify(b"pass word")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(UnknownScheme):
        StoredPassword.parse("{ROT13}cnff jbeq")
    with pytest.raises(UnknownScheme):
        StoredPassword.parse("{PLAIN.HEX}x")


def test_broken_values_do_not_verify() -> None:
    for value in [
        "{ARGON2ID}$argon2id$garbage",
        "{BLF-CRYPT}$2y$xx",
        "{SHA512-CRYPT}$6$",
        "{SHA}!!!",
        "{SCRAM-SHA-256}1,2",
        "{CRYPT}nothing",
    ]:
        assert not StoredPassword.parse(value).verify(b"pass word")


def test_plaintext_is_only_known_for_plain_schemes() -> None:
    assert StoredPassword.parse("{PLAIN}pw").plaintext() == b"pw"
    assert StoredPassword.parse(DOVEADM["SHA512-CRYPT"]).plaintext() is None


def test_repr_hides_the_value() -> None:
    assert "pass word" not in repr(StoredPassword.parse("{PLAIN}pass word"))


def test_new_argon2id_hashes_verify() -> None:
    stored = StoredPassword.parse(hash_argon2id(b"s3cret"))
    assert stored.scheme == "ARGON2ID"
    assert stored.verify(b"s3cret")


@pytest.mark.parametrize(
    "scheme", ["ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "SSHA512", "PLAIN"]
)
def test_fresh_doveadm_hashes_verify(scheme: str) -> None:
    require_program("doveadm")
    value = subprocess.run(
        ["doveadm", "pw", "-s", scheme, "-p", "Zürich 2026!"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    stored = StoredPassword.parse(value)
    assert stored.verify("Zürich 2026!".encode())
    assert not stored.verify(b"Zurich 2026!")


@pytest.mark.parametrize("scheme", list(NEW_HASHES))
def test_new_hashes_verify_here_and_in_dovecot(scheme: str) -> None:
    value = hash_password(scheme, "Zürich 2026!".encode())
    assert value.startswith("{" + scheme + "}")
    stored = StoredPassword.parse(value)
    assert stored.verify("Zürich 2026!".encode())
    assert not stored.verify(b"Zurich 2026!")
    require_program("doveadm")
    checked = subprocess.run(
        ["doveadm", "pw", "-t", value, "-p", "Zürich 2026!"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "(verified)" in checked.stdout


def test_a_password_a_scheme_cannot_store_is_refused() -> None:
    with pytest.raises(ValueError, match="SCRAM-SHA-256 cannot store"):
        hash_password("SCRAM-SHA-256", b"\xff")
    with pytest.raises(ValueError, match="72 octets"):
        hash_password("BLF-CRYPT", b"x" * 73)
