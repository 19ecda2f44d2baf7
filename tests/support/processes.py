"""This process's children and whether a pid still runs, from /proc (no psutil): what the
lifetime, leak and soak tests count."""

from __future__ import annotations

import os


def children() -> set[int]:
    """Pids of this process's live (not zombie) children."""
    me, out = str(os.getpid()), set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    state, ppid = f.read().split(")")[-1].split()[:2]
            except OSError:
                continue
            if ppid == me and state != "Z":
                out.add(int(p))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie or a pid gone is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
