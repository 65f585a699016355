"""Quality against sampling steps for every sampler of a trained model: which setting to use.

    python gvc_sampler_study.py --model gvc.pth --spk data_gvc/singer/alto.spk.npy --wave a.wav b.wav
    python gvc_sampler_study.py --model gvc.pth --spk alto.spk.npy --wave a.wav --steps 1 2 4 8 --vocoder none

For each song, sampler and step count the mel is generated from the same noise as a ``--reference_steps`` (100)
solution of the model's default sampler; reported per setting: estimator calls (NFE), MCD to that reference (dB,
mel-cepstra from the log-mel by a DCT, c0 excluded), F0 RMSE of the vocoded result against the input F0 (cents; not
with ``--vocoder none``) and seconds. Writes ``study.json``, ``study.png`` (MCD against NFE) and prints a table with
the cheapest setting within ``--tolerance_db`` of the reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common.audio import AudioError, load_audio
from common.runtime import tune_allocator
from conversion import Converter, InferenceError, align, mix_speakers
from grad.samplers import SAMPLERS

log = logging.getLogger("gvc_sampler_study")


def mel_cepstral_distance(mel_a: torch.Tensor, mel_b: torch.Tensor, order: int = 24) -> float:
    """MCD (dB) between two log-mels ``[n_mels, T]`` of the same length: DCT-II (orthonormal) over the bands,
    coefficients 1..order, ``10 / ln 10 * sqrt(2 * sum(diff^2))`` averaged over frames."""
    from scipy.fft import dct

    ca = dct(mel_a.double().numpy(), type=2, axis=0, norm="ortho")[1: order + 1]
    cb = dct(mel_b.double().numpy(), type=2, axis=0, norm="ortho")[1: order + 1]
    return float(10.0 / np.log(10.0) * np.mean(np.sqrt(2.0 * np.sum((ca - cb) ** 2, axis=0))))


def f0_rmse_cents(f0_out: np.ndarray, f0_in: np.ndarray) -> float:
    n = min(len(f0_out), len(f0_in))
    a, b = f0_out[:n], f0_in[:n]
    both = (a > 0) & (b > 0)
    if both.sum() < 2:
        return float("nan")
    return float(np.sqrt(np.mean((1200 * np.log2(a[both] / b[both])) ** 2)))


def samplers_for(kind: str) -> list[str]:
    kind = "flow" if kind in ("flow", "rectified") else kind
    return [name for name, spec in SAMPLERS.items() if spec.kind == kind]


def study(conv, songs: list[tuple[str, np.ndarray]], spk: np.ndarray, samplers: list[str], steps: list[int],
          reference_steps: int, seed: int, vocoder: bool) -> list[dict]:
    """``songs``: (path, its audio at 16 kHz) pairs."""
    default = conv.cfg.grad.sampler
    rows = []
    for song, wav16 in songs:
        vec, f0 = align(conv.units(wav16), conv.f0(wav16))
        ref = conv.acoustic(vec, f0, spk, steps=reference_steps, sampler=default, seed=seed)
        for sampler in samplers:
            for k in steps:
                t0 = time.perf_counter()
                mel = conv.acoustic(vec, f0, spk, steps=k, sampler=sampler, seed=seed)
                seconds = time.perf_counter() - t0
                row = {"song": str(song), "sampler": sampler, "steps": k, "nfe": k * SAMPLERS[sampler].calls_per_step,
                       "mcd_db": mel_cepstral_distance(mel, ref), "seconds": round(seconds, 3)}
                if vocoder:
                    out = conv.vocode(mel, f0, seed)
                    import librosa

                    from pitch.f0 import compute_f0

                    out16 = librosa.resample(out, orig_sr=conv.cfg.data.sampling_rate, target_sr=16000)
                    row["f0_rmse_cents"] = f0_rmse_cents(compute_f0(out16.astype(np.float32), 16000), f0)
                rows.append(row)
                log.info("%s %s:%d  mcd %.3f dB", Path(song).name, sampler, k, row["mcd_db"])
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over songs per (sampler, steps)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["steps"]), []).append(r)
    out = []
    for (sampler, k), rs in groups.items():
        m = {"sampler": sampler, "steps": k, "nfe": rs[0]["nfe"],
             "mcd_db": float(np.mean([r["mcd_db"] for r in rs])), "seconds": float(np.mean([r["seconds"] for r in rs]))}
        if "f0_rmse_cents" in rs[0]:
            m["f0_rmse_cents"] = float(np.nanmean([r["f0_rmse_cents"] for r in rs]))
        out.append(m)
    return sorted(out, key=lambda m: (m["sampler"], m["steps"]))


def recommend(summary: list[dict], tolerance_db: float) -> dict | None:
    """The setting with the fewest estimator calls whose MCD to the reference is within ``tolerance_db``."""
    ok = [m for m in summary if m["mcd_db"] <= tolerance_db]
    return min(ok, key=lambda m: (m["nfe"], m["mcd_db"])) if ok else None


def plot(summary: list[dict], path: Path) -> None:
    from common.plots import save_curves_png

    curves = {sampler: sorted((m["nfe"], m["mcd_db"]) for m in summary if m["sampler"] == sampler)
              for sampler in sorted({m["sampler"] for m in summary})}
    save_curves_png(curves, path, "estimator calls (NFE)", "MCD to the reference (dB)", log2_x=True)


def main(argv=None) -> int:
    tune_allocator()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    ap = argparse.ArgumentParser(description="Quality against steps for every sampler of a model.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", default=None)
    ap.add_argument("--spk", required=True, help="target singer .spk.npy")
    ap.add_argument("--wave", required=True, nargs="+", help="a few source songs")
    ap.add_argument("--samplers", nargs="+", default=None, help="default: every sampler of the model's decoder")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--reference_steps", type=int, default=100)
    ap.add_argument("--tolerance_db", type=float, default=0.5, help="MCD within which a setting counts as equal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocoder", choices=["bigvgan", "griffinlim", "none"], default="bigvgan",
                    help="vocoder for the F0 error (none: mel metrics only)")
    ap.add_argument("--vocoder_model", default=None)
    ap.add_argument("--hubert_model", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default="sampler_study", help="folder for study.json and study.png")
    args = ap.parse_args(argv)
    from common.checkpoint import CheckpointError

    try:
        conv = Converter(args.model, args.config, args.device,
                         vocoder=args.vocoder if args.vocoder != "none" else "griffinlim",
                         vocoder_model=args.vocoder_model, hubert_model=args.hubert_model)
        spk = mix_speakers([args.spk], None, conv.cfg.data.speaker_backend)
        samplers = args.samplers or samplers_for(conv.cfg.grad.decoder)
        valid = samplers_for(conv.cfg.grad.decoder)
        if min(args.steps) < 1 or args.reference_steps < 1:
            raise InferenceError("--steps and --reference_steps: at least 1 each")
        songs, unreadable = [], []
        for song in args.wave:  # all read before hours of sampling, not found unreadable after
            try:
                songs.append((song, load_audio(song, 16000)))
            except AudioError as exc:
                unreadable.append(str(exc))
        if unreadable:
            raise InferenceError("; ".join(unreadable))
        bad = [s for s in samplers if s not in valid]
        if bad:
            raise InferenceError(f"--samplers {' '.join(bad)}: not samplers of the {conv.cfg.grad.decoder} decoder "
                                 f"(choose from {', '.join(valid)})")
        rows = study(conv, songs, spk, samplers, sorted(set(args.steps)), args.reference_steps, args.seed,
                     args.vocoder != "none")
    except (AudioError, InferenceError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    best = recommend(summary, args.tolerance_db)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"rows": rows, "summary": summary, "recommended": best,
                                                "reference": f"{conv.cfg.grad.sampler}:{args.reference_steps}",
                                                "tolerance_db": args.tolerance_db}, indent=2, default=str))
    plot(summary, out / "study.png")
    cols = ["nfe", "mcd_db", "f0_rmse_cents", "seconds"]
    print("setting".ljust(16) + "".join(c.rjust(16) for c in cols))
    for m in summary:
        print(f"{m['sampler']}:{m['steps']}".ljust(16) + "".join(
            (f"{m[c]:16.3f}" if isinstance(m[c], float) else f"{m[c]:16d}") if c in m else " " * 16 for c in cols))
    if best:
        print(f"recommended: --solver {best['sampler']} --steps {best['steps']} "
              f"({best['nfe']} estimator calls, MCD {best['mcd_db']:.2f} dB to {conv.cfg.grad.sampler}:"
              f"{args.reference_steps})")
    else:
        print(f"no setting within {args.tolerance_db} dB of the reference; try more steps")
    print(f"{out / 'study.json'}, {out / 'study.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
