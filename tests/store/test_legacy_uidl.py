"""UIDLs kept from Dovecot and Courier, read from files in those programs' formats."""

from __future__ import annotations

from pathlib import Path

from pop3d.principal import Principal
from pop3d.store.legacy_uidl import read_courier_sizelist, read_dovecot_uidlist
from pop3d.store.maildir import MaildirStore
from tests.store.contract import arun

NAMES = [
    "1700000000.M100P1.mx,S=120,W=123",
    "1700000100.M200P1.mx,S=90,W=92",
    "1700000200.M300P1.mx",
]


def maildir(tmp_path: Path, extra: str = "") -> Path:
    md = tmp_path / "alice/Maildir"
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True)
    (md / "cur" / (NAMES[0] + ":2,S")).write_bytes(b"a\n")
    (md / "cur" / (NAMES[1] + ":2,")).write_bytes(b"b\n")
    (md / "new" / NAMES[2]).write_bytes(b"c\n")
    (md / "new" / ("1700000300.M400P1.mx" + extra)).write_bytes(b"d\n")  # never seen by them
    return md


def uidls(tmp_path: Path, fmt: str) -> list[str]:
    store = MaildirStore(str(tmp_path / "{user}/Maildir"), uidl_format=fmt)

    async def go() -> list[str]:
        drop = await store.open(Principal("alice"))
        result = [m.uidl for m in drop.messages]
        await drop.close()
        return result

    return arun(go())


def test_dovecot_uidlist_version_3(tmp_path: Path) -> None:
    md = maildir(tmp_path)
    (md / "dovecot-uidlist").write_text(
        "3 V1700000000 N12 G0c1f5b2e7a3e6a65c60000a1b2c3d4e5\n"
        f"9 W123 :{NAMES[0]}\n"
        f"10 :{NAMES[1]}\n"
        f"11 W5 G7c1f5b2e7a3e6a65 :{NAMES[2]}\n"
    )
    assert read_dovecot_uidlist(md)[NAMES[1]].uidl == "0000000a6553f100"
    assert uidls(tmp_path, "dovecot") == [
        "000000096553f100",
        "0000000a6553f100",
        "0000000b6553f100",
        "1700000300.M400P1.mx",
    ]


def test_dovecot_pop3_uidl_and_order_fields_win(tmp_path: Path) -> None:
    md = maildir(tmp_path)
    (md / "dovecot-uidlist").write_text(
        f"3 V42 N4\n1 O3 POLD-ONE :{NAMES[0]}:2,S\n2 O1 POLD-TWO :{NAMES[1]}\n3 O2 :{NAMES[2]}\n"
    )
    assert uidls(tmp_path, "dovecot") == [
        "OLD-TWO",
        "000000030000002a",
        "OLD-ONE",
        "1700000300.M400P1.mx",
    ]


def test_dovecot_uidlist_version_1(tmp_path: Path) -> None:
    md = maildir(tmp_path)
    (md / "dovecot-uidlist").write_text(f"1 1136000000 3\n1 {NAMES[0]}\n2 {NAMES[2]}\n")
    assert uidls(tmp_path, "dovecot")[:2] == ["0000000143b5fc00", "0000000243b5fc00"]


def test_courier_sizelist_versions(tmp_path: Path) -> None:
    md = maildir(tmp_path)
    (md / "courierpop3dsizelist").write_text(
        "/2 4 1699999999\n"
        f"{NAMES[0]}:2,S 123 1:1699999999\n"
        f"{NAMES[1]}:2, 92 0:0\n"
        f"{NAMES[2]} 3 3:1699999999:1\n"
    )
    assert uidls(tmp_path, "courier") == [
        "UID1-1699999999",
        "1700000100.M200P1.mx,S=90,W=92",  # no UID: the file name, escaped
        "UID3-1699999999",
        "1700000300.M400P1.mx",
    ]


def test_courier_version_0_escapes_unsafe_characters(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    md.mkdir()
    (md / "courierpop3dsizelist").write_text("1.M1P1.h'x+\"y 10\n2.M2P2.h 20 7\n")
    found = read_courier_sizelist(md)
    assert found["1.M1P1.h'x+\"y"].uidl == "1.M1P1.h+27x+2B+22y"
    assert found["2.M2P2.h"].uidl == "UID7"


def test_without_the_file_the_compat_modes_fall_back_to_our_uidls(tmp_path: Path) -> None:
    maildir(tmp_path)
    ours = uidls(tmp_path, "unique")
    assert uidls(tmp_path, "dovecot") == ours == uidls(tmp_path, "courier")
    assert ours[0] == "1700000000.M100P1.mx"


def test_garbage_files_are_ignored(tmp_path: Path) -> None:
    md = maildir(tmp_path)
    (md / "dovecot-uidlist").write_text("garbage\nmore garbage\n")
    (md / "courierpop3dsizelist").write_text("/9 x\n\x00\x01\n")
    assert uidls(tmp_path, "dovecot") == uidls(tmp_path, "unique") == uidls(tmp_path, "courier")
