"""common/windows.py, the one window planner: the acoustic model's windows through it are the ones its own loop
made before (so converted songs stay bit-identical), and the packages import in one direction."""

import ast
from pathlib import Path

import numpy as np
import pytest

from common.windows import plan_windows
from conversion import crossfade_weights, windows

REPO = Path(__file__).resolve().parent.parent


def loop_windows(n: int, chunk: int, context: int) -> list[tuple[int, int]]:
    """The acoustic model's former planner: step by ``chunk`` until a window reaches the end."""
    out, o = [], 0
    while True:
        start, end = max(0, o - context), min(n, o + chunk + context)
        out.append((start, end))
        if end >= n:
            return out
        o += chunk


def test_acoustic_windows_are_the_former_loops():
    for chunk, context in ((2400, 8), (40, 8), (16, 8), (30, 15), (50, 0), (7, 3)):
        for n in range(1, 5 * chunk + 3):
            assert windows(n, chunk, context) == loop_windows(n, chunk, context), (n, chunk, context)


def test_min_tail_decides_whether_a_covered_last_window_runs():
    # 2408 frames, cores of 2400, 8 context frames: the first window already reaches the end
    assert [(w.win_start, w.win_end) for w in plan_windows(2408, 2400, 8)] == [(0, 2408), (2392, 2408)]
    assert [(w.win_start, w.win_end) for w in plan_windows(2408, 2400, 8, min_tail=9)] == [(0, 2408)]
    assert windows(2408, 2400, 8) == [(0, 2408)]
    assert windows(2409, 2400, 8) == [(0, 2408), (2392, 2409)]


def test_acoustic_windows_overlap_by_twice_the_context_and_weights_sum_to_one():
    for n in (100, 161, 167, 400):
        ws = windows(n, 40, 8)
        for (_, e0), (s1, _) in zip(ws, ws[1:]):
            assert e0 - s1 == 16
        total = np.zeros(n)
        for s, e in ws:
            total[s:e] += crossfade_weights(s, e, n, 8)
        assert np.allclose(total, 1.0), n


def test_chunk_shorter_than_overlap_is_refused():
    with pytest.raises(ValueError, match="at least the overlap"):
        plan_windows(100, 8, 16)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_dependencies_point_one_way():
    """common <- grad/bigvgan/hubert/pitch/speaker <- conversion <- scripts: a library never imports upwards."""
    scripts = {p.stem for p in REPO.glob("gvc_*.py")}
    above = {"common": {"grad", "bigvgan", "hubert", "pitch", "speaker", "conversion"} | scripts,
             **{pkg: {"conversion"} | scripts for pkg in ("grad", "bigvgan", "hubert", "pitch", "speaker")},
             "conversion": scripts}
    wrong = [f"{path.relative_to(REPO)} imports {name}" for pkg, banned in above.items()
             for path in (REPO / pkg).rglob("*.py") for name in _imports(path) & banned]
    assert not wrong, wrong
