"""A process as /proc tells it: its parent and its start time. A pid comes round again on
a busy node (32768 of them, and every thread takes one); with its start time, it names
one process for good."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def parent_and_start(pid: int) -> Optional[tuple[int, str]]:
    """(parent pid, start time in clock ticks since boot) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]
    except (OSError, ValueError, IndexError):
        return None


def identity(pid: int) -> Optional[str]:
    """`PID-STARTTIME` of a live process, or None."""
    found = parent_and_start(pid)
    return None if found is None else f"{pid}-{found[1]}"
