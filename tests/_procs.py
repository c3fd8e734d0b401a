"""Finding a sandbox run's processes from outside, by a marker in its program (so runs of other tests are not
mistaken for it): the processes whose command line names a sandbox folder holding that program, and their
descendants (in namespace mode the program is a child of the bootstrap)."""

from __future__ import annotations

import os
import re

_WORKDIR = re.compile(r"/[^\s\"'\x00]*?ponder-sandbox-\w+")


def sandbox_pids(marker: str) -> set[int]:
    """Live (not zombie) processes of the sandbox runs whose program contains `marker`."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if state == "Z":
            continue
        parents[int(entry)] = int(ppid)
        for workdir in set(_WORKDIR.findall(cmdline)):
            try:
                with open(os.path.join(workdir, "main.py")) as f:
                    if marker in f.read():
                        roots.add(int(entry))
            except OSError:
                pass
    found = set(roots)
    while grown := {p for p, pp in parents.items() if pp in found} - found:
        found |= grown
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` that still exist, zombies aside."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(pid)
        except OSError:
            pass
    return out
