"""bench/compare --smoke: the benchmark harness keeps working (seconds, tiny counts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import not_here
from tests.peers import postgres
from tests.peers.dovecot import available

ROOT = Path(__file__).resolve().parents[2]


def test_compare_smoke(tmp_path: Path) -> None:
    reason = available() or (postgres.binaries() is None and "PostgreSQL is not installed")
    if reason:
        not_here(reason)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (report,) = tmp_path.glob("compare-*.md")
    text = report.read_text()
    for server in (
        "pop3d", "pop3d-asyncio", "pop3d-argon2id", "pop3d-postgresql", "dovecot", "twisted"
    ):
        assert f"| {server} |" in text
    rows = json.loads(next(tmp_path.glob("compare-*.json")).read_text())
    ours = [r for r in rows if r["server"].startswith("pop3d")]
    assert ours
    assert all(r["errors"] == 0 and r["wrong"] == 0 and r["done"] > 0 for r in ours)
    peers = {r["server"] for r in rows} - {r["server"] for r in ours}
    assert peers == {"dovecot", "twisted"}
    assert list(tmp_path.glob("compare-*.png"))
