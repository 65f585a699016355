"""What a conversion shows while it runs: one progress bar per stage, and optional memory lines for the bench."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str) -> tqdm:
    """One stage's bar on stderr; hidden when stderr is not a terminal (tqdm's ``disable=None``)."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=None)


def log_rss(stage: str) -> None:
    """With ``GVC_RSS_LOG=1``: one line ``rss <stage> <current MB> <peak MB>`` on stderr (bench/bench_cli_memory.py)."""
    if os.environ.get("GVC_RSS_LOG") != "1":
        return
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return
    kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
          if k in ("VmRSS", "VmHWM")}
    print(f"rss {stage} {kb['VmRSS'] / 1024:.1f} {kb['VmHWM'] / 1024:.1f}", file=sys.stderr, flush=True)
