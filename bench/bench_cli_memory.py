"""Peak memory of the one command, ``gvc_inference.py``, by song length; prints JSON.

    python bench/bench_cli_memory.py                          # 30, 180 and 600 s songs, --steps 2
    python bench/bench_cli_memory.py --seconds 30 180 --steps 2 --out bench/results/cpu_cli_memory.json

Each song (a corpus song looped to the length) is converted by the real CLI in its own process under
``/usr/bin/time -f %M`` (peak RSS of the whole process, as a user sees it), with the same flags for every length:
the F0 check wav and the mel image are written too. ``GVC_RSS_LOG=1`` makes the CLI print its RSS (current and
peak so far) after each stage, reported as ``stages_mb``. The ratios to the shortest song are the figure of merit
(targets: 180 s <= 1.3x and 600 s <= 1.5x of 30 s). Official checkpoints are used when present, else full-size
weights made by the test fill recipe (the same architecture, so the same memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "corpus"
sys.path.insert(0, str(REPO / "bench"))
from bench_infer import checkpoint  # noqa: E402  (bench/ is not a package)


def make_song(seconds: float, path: Path) -> Path:
    """A corpus song looped to ``seconds`` (16 kHz mono wav)."""
    x, sr = sf.read(CORPUS / "kal" / "lullaby.wav", dtype="float32")
    n = int(seconds * sr)
    sf.write(path, np.tile(x, int(np.ceil(n / len(x))))[:n], sr)
    return path


def run_cli(song: Path, work: Path, models: dict, steps: int, extra: list[str]) -> dict:
    spk = work / "target.spk.npy"
    if not spk.is_file():
        v = np.random.default_rng(0).standard_normal(256).astype(np.float32)
        np.save(spk, v / np.linalg.norm(v))
    out = work / f"{song.stem}_out.wav"
    cmd = ["/usr/bin/time", "-f", "maxrss_kb %M\ncpu_s %U %S\nwall_s %e", sys.executable,
           str(REPO / "gvc_inference.py"), "--model", models["gvc"], "--spk", str(spk), "--wave", str(song),
           "--out", str(out),
           "--vocoder_model", models["bigvgan"], "--hubert_model", models["hubert"], "--steps", str(steps),
           "--seed", "1", "--device", "cpu", *extra]
    env = dict(os.environ, GVC_RSS_LOG="1", PYTHONPATH=str(REPO))
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    lines = res.stderr.splitlines()
    if res.returncode != 0:
        return {"error": "\n".join(lines[-20:])}
    stats = {ln.split()[0]: ln.split()[1:] for ln in lines if ln.split() and ln.split()[0] in ("maxrss_kb", "cpu_s",
                                                                                                  "wall_s")}
    stages = {}
    for ln in lines:
        parts = ln.split()
        if len(parts) == 4 and parts[0] == "rss":
            stages[parts[1]] = {"rss_mb": float(parts[2]), "peak_so_far_mb": float(parts[3])}
    pitch, png = out.with_name(out.stem[: -len("_out")] + "_pitch.wav"), out.with_name(out.stem + ".mel.png")
    return {"peak_rss_mb": round(int(stats["maxrss_kb"][0]) / 1024, 1),
            "cpu_s": round(sum(float(v) for v in stats["cpu_s"]), 1), "wall_s": float(stats["wall_s"][0]),
            "stages_mb": stages, "outputs": {"wav": out.is_file(), "pitch_wav": pitch.is_file(), "png": png.is_file()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[30.0, 180.0, 600.0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more gvc_inference.py flags")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not Path("/usr/bin/time").is_file():
        print("error: /usr/bin/time not found (apt-get install time)", file=sys.stderr)
        return 2
    models = {"gvc": checkpoint(REPO / "grad_pretrain" / "gvc.pretrain.pth", "gvc_v3")[0],
              "bigvgan": checkpoint(REPO / "bigvgan_pretrain" / "nsf_bigvgan_pretrain_32K.pth",
                                    "nsf_bigvgan_generator")[0],
              "hubert": checkpoint(REPO / "hubert_pretrain" / "hubert-soft-0d54a1f4.pt", "hubert_soft", "module.")[0]}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for s in sorted(args.seconds):
            song = make_song(s, work / f"song_{s:g}s.wav")
            results[f"{s:g}"] = run_cli(song, work, models, args.steps, args.extra)
            print(f"{s:g} s: {results[f'{s:g}'].get('peak_rss_mb', 'error')} MB", file=sys.stderr, flush=True)
            text = report(results, args)
            if args.out:  # after each song: a long run's early results are kept
                Path(args.out).write_text(text + "\n")
    print(text)
    return 1 if any("error" in r for r in results.values()) else 0


def report(results: dict, args) -> str:
    base = results[f"{min(args.seconds):g}"].get("peak_rss_mb")
    ratios = {k: round(r["peak_rss_mb"] / base, 3) for k, r in results.items() if base and "peak_rss_mb" in r}
    return json.dumps({"bench": "cli_memory", "machine": platform.machine(), "steps": args.steps, "flags": args.extra,
                       "measure": "/usr/bin/time -f %M of the whole gvc_inference.py process (MB)",
                       "results": results, f"ratio_to_{min(args.seconds):g}s": ratios}, indent=2)


if __name__ == "__main__":
    sys.exit(main())
