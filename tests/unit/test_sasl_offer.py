"""Which mechanisms are offered: never one that fails a user who has the right password."""

from __future__ import annotations

from pop3d.auth.authenticator import Authenticator
from pop3d.auth.base import SchemeCensus, UserEntry
from pop3d.auth.sasl import MECHANISMS
from pop3d.auth.sasl.base import Failure
from pop3d.auth.sasl.offer import MechanismOffer, choose
from pop3d.auth.schemes import StoredPassword
from pop3d.protocol.events import AuthFailure
from tests.unit.test_sasl_mechanisms import Users, run_scram

ALL = ("PLAIN", "LOGIN", "SCRAM-SHA-256")


def census(*passwords: str | None) -> SchemeCensus:
    return SchemeCensus.of(
        UserEntry(f"u{i}", StoredPassword.parse(p) if p else None) for i, p in enumerate(passwords)
    )


def test_the_census_counts_schemes_most_common_first() -> None:
    counted = census("{ARGON2ID}x", "{PLAIN}a", "{ARGON2ID}y", None)
    assert counted.counts == (("ARGON2ID", 2), ("PLAIN", 1))
    assert counted.without({"PLAIN"}) == (("ARGON2ID", 2),)


def test_scram_is_offered_when_every_user_can_complete_it() -> None:
    assert choose(ALL, census("{PLAIN}a", "{SCRAM-SHA-256}4096,a,b,c", "{CLEARTEXT}b")) == (
        MechanismOffer(ALL)
    )


def test_one_user_that_cannot_complete_scram_leaves_it_out_and_says_why() -> None:
    offer = choose(ALL, census("{PLAIN}a", "{ARGON2ID}x", "{SHA512-CRYPT}$6$y", "{ARGON2ID}z"))
    assert offer.offered == ("PLAIN", "LOGIN")
    assert offer.describe() == (
        "SASL mechanisms offered: PLAIN LOGIN; SCRAM-SHA-256 left out: 3 users have a password "
        "it cannot use ({ARGON2ID} 2, {SHA512-CRYPT} 1)"
    )
    one = choose(ALL, census("{ARGON2ID}x")).describe()
    assert one.endswith(
        "SCRAM-SHA-256 left out: 1 user has a password it cannot use ({ARGON2ID} 1)"
    )


def test_users_without_a_password_and_an_empty_database_leave_scram_in() -> None:
    assert choose(ALL, census(None, "{PLAIN}a")).offered == ALL
    assert choose(ALL, census()).offered == ALL


def test_an_unreadable_database_offers_only_what_needs_no_stored_secret() -> None:
    offer = choose(ALL, None)
    assert offer.offered == ("PLAIN", "LOGIN")
    assert offer.left_out == (("SCRAM-SHA-256", "the user database cannot be read"),)


def test_the_admin_order_and_choice_are_kept() -> None:
    assert choose(("SCRAM-SHA-256", "PLAIN"), census("{PLAIN}a")).offered == (
        "SCRAM-SHA-256",
        "PLAIN",
    )
    assert choose(("LOGIN",), census("{ARGON2ID}x")) == MechanismOffer(("LOGIN",))


def test_every_mechanism_says_what_it_completes_from() -> None:
    for mechanism in MECHANISMS.values():
        assert mechanism.completes_from is None or "PLAIN" in mechanism.completes_from


def test_a_scram_exchange_for_a_user_it_cannot_complete_fails_like_an_unknown_one() -> None:
    # The database changed after the session was offered SCRAM: the exchange runs on with
    # keys no password matches, as for an unknown user.
    authenticator = Authenticator(Users(dave="{SHA512-CRYPT}$6$x$y"))
    assert run_scram(authenticator, "dave", "x") == Failure(AuthFailure.CREDENTIALS, "dave")
    assert run_scram(authenticator, "nobody", "x") == Failure(AuthFailure.CREDENTIALS, "nobody")
