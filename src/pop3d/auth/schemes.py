"""Dovecot password schemes: `{SCHEME}value`, verified by maintained libraries.

The schemes are the ones `doveadm pw -s` writes. A `.HEX` or `.B64` suffix on a digest scheme
(`{SSHA512.HEX}`) says how the digest is encoded, as in Dovecot. A field without `{SCHEME}` is
`{CRYPT}`, Dovecot's default for passwd-files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import argon2
import bcrypt
import scramp
from passlib import hash as passlib_hash

Verifier = Callable[[bytes, str], bool]

# New hashes: OWASP's Argon2id parameters (19 MiB, 2 passes), about 25 ms here, so a login
# storm costs CPU, not memory. Verification takes the parameters from the stored hash.
_argon2 = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def _verify_argon2(password: bytes, value: str) -> bool:
    try:
        return _argon2.verify(value, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


def _verify_bcrypt(password: bytes, value: str) -> bool:
    try:
        return bcrypt.checkpw(password, value.encode("ascii"))
    except ValueError:
        return False


def _passlib(handler_name: str, ident: str = "") -> Verifier:
    handler = getattr(passlib_hash, handler_name)

    def verify(password: bytes, value: str) -> bool:
        try:
            return bool(handler.verify(password, ident + value))
        except ValueError:
            return False

    return verify


def _unsalted(algorithm: str) -> Verifier:
    def verify(password: bytes, value: str) -> bool:
        expected = _decode_digest(value)
        return expected is not None and hmac.compare_digest(
            hashlib.new(algorithm, password).digest(), expected
        )

    return verify


def _verify_plain(password: bytes, value: str) -> bool:
    return hmac.compare_digest(password, value.encode("utf-8", "surrogateescape"))


def _verify_crypt(password: bytes, value: str) -> bool:
    """{CRYPT}: whichever crypt(3) format the value is in."""
    if value.startswith(("$2a$", "$2b$", "$2y$")):
        return _verify_bcrypt(password, value)
    for prefix, verifier in _CRYPT_FORMATS:
        if value.startswith(prefix):
            return verifier(password, value)
    return False


def _verify_scram(mechanism: str) -> Verifier:
    """Dovecot's SCRAM entry: iterations,salt,stored_key,server_key (base64)."""

    def verify(password: bytes, value: str) -> bool:
        entry = ScramEntry.parse(value)
        if entry is None:
            return False
        try:
            derived = ScramEntry.from_password(mechanism, password, entry.salt, entry.iterations)
        except (UnicodeDecodeError, scramp.ScramException):
            return False
        return hmac.compare_digest(derived.stored_key, entry.stored_key)

    return verify


@dataclass(frozen=True, slots=True)
class ScramEntry:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def parse(cls, value: str) -> ScramEntry | None:
        parts = value.split(",")
        if len(parts) != 4 or not parts[0].isdigit():
            return None
        try:
            salt, stored, server = (base64.b64decode(p, validate=True) for p in parts[1:])
        except (binascii.Error, ValueError):
            return None
        return cls(int(parts[0]), salt, stored, server)

    @classmethod
    def from_password(
        cls, mechanism: str, password: bytes, salt: bytes | None = None, iterations: int = 4096
    ) -> ScramEntry:
        """Keys derived by scramp (SASLprep, PBKDF2, HMAC); 4096 rounds is RFC 7677's floor."""
        salt, stored, server, rounds = scramp.ScramMechanism(mechanism).make_auth_info(
            password.decode("utf-8"), iteration_count=iterations, salt=salt
        )
        return cls(rounds, salt, stored, server)


_CRYPT_FORMATS: tuple[tuple[str, Verifier], ...] = (
    ("$6$", _passlib("sha512_crypt")),
    ("$5$", _passlib("sha256_crypt")),
    ("$1$", _passlib("md5_crypt")),
)

SCHEMES: dict[str, Verifier] = {
    "ARGON2ID": _verify_argon2,
    "ARGON2I": _verify_argon2,
    "BLF-CRYPT": _verify_bcrypt,
    "SHA512-CRYPT": _passlib("sha512_crypt"),
    "SHA256-CRYPT": _passlib("sha256_crypt"),
    "MD5-CRYPT": _passlib("md5_crypt"),
    "CRYPT": _verify_crypt,
    "SSHA512": _passlib("ldap_salted_sha512", "{SSHA512}"),
    "SSHA256": _passlib("ldap_salted_sha256", "{SSHA256}"),
    "SSHA": _passlib("ldap_salted_sha1", "{SSHA}"),
    "SMD5": _passlib("ldap_salted_md5", "{SMD5}"),
    "SHA512": _unsalted("sha512"),
    "SHA256": _unsalted("sha256"),
    "SHA": _unsalted("sha1"),
    "SHA1": _unsalted("sha1"),
    "LDAP-MD5": _unsalted("md5"),
    "PLAIN-MD5": _unsalted("md5"),
    "PLAIN": _verify_plain,
    "CLEARTEXT": _verify_plain,
    "SCRAM-SHA-256": _verify_scram("SCRAM-SHA-256"),
    "SCRAM-SHA-1": _verify_scram("SCRAM-SHA-1"),
}

# Schemes whose values we store as a digest that may carry a .HEX/.B64 encoding suffix.
_DIGEST_SCHEMES = frozenset(
    {
        "SSHA512",
        "SSHA256",
        "SSHA",
        "SMD5",
        "SHA512",
        "SHA256",
        "SHA",
        "SHA1",
        "LDAP-MD5",
        "PLAIN-MD5",
    }
)
# How Dovecot encodes these digests when no suffix is given.
_HEX_BY_DEFAULT = frozenset({"PLAIN-MD5"})
PLAINTEXT_SCHEMES = frozenset({"PLAIN", "CLEARTEXT"})
# Deliberately slow (work factors): verified on a thread, never on the event loop. The others
# are one digest or a comparison, microseconds.
COSTLY_SCHEMES = frozenset(
    {
        "ARGON2ID",
        "ARGON2I",
        "BLF-CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "MD5-CRYPT",
        "CRYPT",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
    }
)


def _decode_digest(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


class UnknownScheme(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class StoredPassword:
    scheme: str
    value: str  # for digest schemes, normalised to base64

    def __repr__(self) -> str:
        return f"StoredPassword(scheme={self.scheme!r}, value=<hidden>)"

    @classmethod
    def parse(cls, field: str, default_scheme: str = "CRYPT") -> StoredPassword:
        scheme, value = default_scheme, field
        if field.startswith("{") and "}" in field:
            scheme, _, value = field[1:].partition("}")
            scheme = scheme.upper()
        scheme, _, encoding = scheme.partition(".")
        if scheme not in SCHEMES:
            raise UnknownScheme(f"unknown password scheme {scheme!r}")
        if scheme in _DIGEST_SCHEMES:
            hex_encoded = encoding == "HEX" or (not encoding and scheme in _HEX_BY_DEFAULT)
            if hex_encoded:
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    raise UnknownScheme(f"{scheme}.HEX value is not hexadecimal") from None
        elif encoding:
            raise UnknownScheme(f"scheme {scheme} takes no .{encoding} suffix")
        return cls(scheme, value)

    def verify(self, password: bytes) -> bool:
        return SCHEMES[self.scheme](password, self.value)

    @property
    def field(self) -> str:
        """The `{SCHEME}value` that parses back to this (a digest says it is base64)."""
        suffix = ".B64" if self.scheme in _DIGEST_SCHEMES else ""
        return f"{{{self.scheme}{suffix}}}{self.value}"

    @property
    def costly(self) -> bool:
        return self.scheme in COSTLY_SCHEMES

    def plaintext(self) -> bytes | None:
        """The password itself, when the scheme stores it (needed by APOP)."""
        if self.scheme in PLAINTEXT_SCHEMES:
            return self.value.encode("utf-8", "surrogateescape")
        return None


def hash_argon2id(password: bytes) -> str:
    """A new {ARGON2ID} field, in the form `doveadm pw -s ARGON2ID` writes."""
    return "{ARGON2ID}" + _argon2.hash(password)


def _hash_scram(password: bytes) -> str:
    """Dovecot's {SCRAM-SHA-256} form: iterations,salt,stored key,server key (base64)."""
    entry = ScramEntry.from_password("SCRAM-SHA-256", password)
    keys = (entry.salt, entry.stored_key, entry.server_key)
    encoded = ",".join(base64.b64encode(k).decode("ascii") for k in keys)
    return f"{{SCRAM-SHA-256}}{entry.iterations},{encoded}"


def _hash_sha512_crypt(password: bytes) -> str:
    # crypt(3)'s default of 5000 rounds, as `doveadm pw -s SHA512-CRYPT` writes it.
    return "{SHA512-CRYPT}" + str(passlib_hash.sha512_crypt.using(rounds=5000).hash(password))


def _hash_bcrypt(password: bytes) -> str:
    return "{BLF-CRYPT}" + bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode("ascii")


# The schemes `pop3d user add|passwd --scheme` writes; the first is the default.
NEW_HASHES: dict[str, Callable[[bytes], str]] = {
    "ARGON2ID": hash_argon2id,
    "SCRAM-SHA-256": _hash_scram,
    "SHA512-CRYPT": _hash_sha512_crypt,
    "BLF-CRYPT": _hash_bcrypt,
}


def hash_password(scheme: str, password: bytes) -> str:
    """A new `{SCHEME}value` field; raises ValueError for a password the scheme cannot take
    (SCRAM needs UTF-8 that SASLprep allows; bcrypt reads at most 72 octets)."""
    if scheme == "BLF-CRYPT" and len(password) > 72:
        raise ValueError("BLF-CRYPT uses only the first 72 octets of a password")
    try:
        return NEW_HASHES[scheme](password)
    except (UnicodeDecodeError, scramp.ScramException) as exc:
        raise ValueError(f"{scheme} cannot store this password: {exc}") from None
