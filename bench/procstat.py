"""A server's CPU time and memory, read from /proc for its whole process tree.

CPU is utime+stime+cutime+cstime summed over the live processes of the tree: a child that
has exited (Dovecot's per-session processes) is counted in its reaped parent's cutime/cstime,
so nothing is lost or counted twice. Memory is PSS, which shares pages fairly between the
processes of a tree (RSS would count Dovecot's shared libraries once per process).
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text()
            found += [int(c) for c in text.split()]
    except OSError:
        pass
    return found


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
        total += sum(int(f) for f in fields[11:15])
    return total / TICKS


def pss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) seconds of the tree, children included."""
    user = system = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return user / TICKS, system / TICKS
