"""Benchmark conversion per stage; prints JSON.

    python bench/bench_infer.py                                  # 10 s and 60 s, CPU or CUDA, V3 euler:10
    python bench/bench_infer.py --seconds 10 --runs euler:10 heun:5 euler:4 --accuracy
    python bench/bench_infer.py --seconds 10 --runs euler:10 --repeat 3           # end to end: median of 3
    python bench/bench_infer.py --version v2 --runs ml:20 dpm2:10 dpm3:6 --accuracy

Stages: content (HuBERT-soft), F0 (praat), encoder, decoder (per sampler:steps), vocoder (NSF-BigVGAN), and the end
to end wall time of one conversion at the first sampler setting, with the real-time factor (compute seconds per
audio second) and peak memory (process RSS on CPU, allocated GPU memory on CUDA). Each input length runs in its own
process so peak memories are comparable. ``--accuracy`` adds, per sampler setting, the mel distance to a 200-step
reference from the same noise (the "equal accuracy" comparison). Official checkpoints are used when present, else
weights made by the test fill recipe (the same architecture and cost; timing only).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.runtime import default_device, synchronize, tune_allocator

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "corpus"


def checkpoint(official: Path, component: str, prefix: str = "") -> tuple[str, str]:
    if official.is_file():
        return str(official), "official"
    sys.path.insert(0, str(REPO / "tests"))
    from golden import cached_official_checkpoint

    return str(cached_official_checkpoint(component, prefix=prefix)), "recipe (timing only)"


def song(seconds: float, path: Path) -> Path:
    x, sr = sf.read(CORPUS / "kal" / "lullaby.wav", dtype="float32")
    n = int(seconds * sr)
    sf.write(path, np.tile(x, int(np.ceil(n / len(x))))[:n], sr)
    return path


def timed(fn, device):
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(args) -> dict:
    from conversion import Converter, align, windows

    device = torch.device(default_device(args.device))
    component = "gvc_v2" if args.version == "v2" else "gvc_v3"
    gvc, gvc_note = checkpoint(REPO / "grad_pretrain" / "gvc.pretrain.pth", component)
    bv, bv_note = checkpoint(REPO / "bigvgan_pretrain" / "nsf_bigvgan_pretrain_32K.pth", "nsf_bigvgan_generator")
    hub, hub_note = checkpoint(REPO / "hubert_pretrain" / "hubert-soft-0d54a1f4.pt", "hubert_soft", "module.")
    config = str(REPO / "configs" / "v2.yaml") if args.version == "v2" else None
    conv = Converter(gvc, config=config, device=str(device), vocoder_model=bv, hubert_model=hub, half=args.half,
                     batch=args.batch)
    wav_path = song(args.one, Path(args.work) / f"song_{args.one:g}.wav")
    from common.audio import load_audio

    wav16 = load_audio(wav_path, 16000)
    spk = np.full(256, 1 / 16, np.float32)
    runs = [(r.split(":")[0], int(r.split(":")[1])) for r in args.runs]
    conv.units(wav16[:16000])  # warm-up: model loads and kernels
    vec50, t_units = timed(lambda: conv.units(wav16), device)
    f0, t_f0 = timed(lambda: conv.f0(wav16), device)
    vec, f0 = align(vec50, f0)
    n = len(f0)
    conv.acoustic(vec[:200], f0[:200], spk, steps=1, sampler=runs[0][0], seed=0)  # warm-up

    # the encoder alone, on the same windows the converter uses
    def encode_all():
        for s, e in windows(n, conv.cfg.infer.out_chunk, conv.cfg.infer.hop_frame):
            from grad.utils import fix_len_compatibility

            t = fix_len_compatibility(e - s)
            v = torch.zeros(1, t, 256, device=device)
            v[0, : e - s] = torch.from_numpy(vec[s:e]).to(device)
            p = torch.zeros(1, t, device=device)
            p[0, : e - s] = torch.from_numpy(f0[s:e]).to(device)
            with torch.inference_mode():
                conv.model.encode(v, p, torch.from_numpy(spk)[None].to(device), torch.tensor([e - s], device=device))

    _, t_enc = timed(encode_all, device)
    stages = {"content": t_units, "f0": t_f0, "encoder": t_enc}
    decoder, mels = {}, {}
    for sampler, steps in runs:
        mel, t = timed(lambda s=sampler, k=steps: conv.acoustic(vec, f0, spk, steps=k, sampler=s, seed=1), device)
        decoder[f"{sampler}:{steps}"] = {"wall_s": round(t - t_enc, 3), "per_step_s": round((t - t_enc) / steps, 4)}
        mels[f"{sampler}:{steps}"] = mel
    wav, t_voc = timed(lambda: conv.vocode(mels[args.runs[0]], f0, seed=1), device)
    stages["vocoder"] = t_voc
    if args.no_e2e:  # stages only (halves the run time of long inputs on the CPU)
        t_e2e = sum(stages.values()) + decoder[args.runs[0]]["wall_s"]
    else:  # median of --repeat runs (a shared VM's timings vary by +-10 %)
        e2e_runs = [timed(lambda: conv.vocode(conv.acoustic(*align(conv.units(wav16), conv.f0(wav16)), spk,
                                                            steps=runs[0][1], sampler=runs[0][0], seed=1),
                                              f0, seed=1), device)[1] for _ in range(args.repeat)]
        t_e2e = float(np.median(e2e_runs))
    out = {
        "seconds": args.one, "frames": n, "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "weights": {"gvc": gvc_note, "bigvgan": bv_note, "hubert": hub_note}, "version": args.version,
        "half": bool(conv.half), "batch_windows": conv.batch,
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "stages_rtf": {k: round(v / args.one, 4) for k, v in stages.items()},
        "decoder": decoder,
        "end_to_end": {"setting": args.runs[0], "wall_s": round(t_e2e, 3), "rtf": round(t_e2e / args.one, 4),
                       "x_real_time": round(args.one / t_e2e, 1),
                       "runs_s": [] if args.no_e2e else [round(t, 3) for t in e2e_runs]},
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }
    if args.accuracy:
        ref_sampler = runs[0][0]
        ref = conv.acoustic(vec, f0, spk, steps=200, sampler=ref_sampler, seed=1)
        out["accuracy_vs_200_steps"] = {
            k: {"mel_l1": round(float((m - ref).abs().mean()), 5)} for k, m in mels.items()
        }
        out["accuracy_reference"] = f"{ref_sampler}:200, same seed"
    return out


def main(argv=None) -> int:
    tune_allocator()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--runs", nargs="+", default=None, help="sampler:steps settings (default by --version)")
    ap.add_argument("--version", choices=["v2", "v3"], default="v3")
    ap.add_argument("--device", default=None)
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--no_e2e", action="store_true", help="end to end = sum of the stages (no separate run)")
    ap.add_argument("--repeat", type=int, default=1, help="end to end runs; their median is reported")
    ap.add_argument("--batch", type=int, default=1, help="acoustic-model windows at a time (gvc_inference --batch)")
    ap.add_argument("--work", default="/tmp")
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.runs = args.runs or (["ml:20"] if args.version == "v2" else ["euler:10"])
    for r in args.runs:
        name, _, steps = r.partition(":")
        if not name or not steps.isdigit() or int(steps) < 1:
            ap.error(f"--runs {r}: expected sampler:steps with steps >= 1 (e.g. euler:10)")
    if args.repeat < 1 or args.batch < 1 or min(args.seconds) <= 0:
        ap.error("--repeat and --batch must be >= 1, --seconds > 0")
    if args.one is not None:
        print(json.dumps(one(args)))
        return 0
    results = []
    for s in args.seconds:
        cmd = [sys.executable, __file__, "--one", str(s), "--version", args.version, "--work", args.work,
               "--runs", *args.runs] + (["--device", args.device] if args.device else []) + (
            ["--half"] if args.half else []) + (["--accuracy"] if args.accuracy else []) + (
            ["--no_e2e"] if args.no_e2e else []) + ["--repeat", str(args.repeat), "--batch", str(args.batch)]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if res.returncode != 0:
            results.append({"seconds": s, "error": res.stderr[-1500:]})
        else:
            results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(json.dumps({"bench": "infer", "machine": platform.machine(), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "results": results,
                      "original_reference": {"cpu_10s_v3_euler10_wall_s": 40.0, "decoder_per_step_s": 3.3,
                                             "note": "the original on this machine, 2 threads, 10 s song"}},
                     indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
