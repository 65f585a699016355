"""Where the time of one training step, one decoder U-Net call and one vocoder window goes; prints JSON.

    python bench/gpu_profile.py                        # CUDA when present: fp32 / bf16 step, fp32 / fp16 inference
    python bench/gpu_profile.py --device cpu --frames 200 --batch-size 2    # a small CPU run

For each case: wall seconds per call (after warm-up), the number of kernels (CUDA) or operators (CPU) one call
launches, and the top operators by self time (torch.profiler). Meant to decide what to speed up on a lent GPU
(launch-bound: many short kernels, CUDA graphs / compile help; compute-bound: precision, layout). Random weights of
the base architecture; synthetic batches of the trainer's shapes. No assertions: numbers only.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from common.config import load_config
from common.runtime import default_device, synchronize, tune_allocator
from grad.model import GradSVC
from training.state import autocast_context


def measure(fn, device: torch.device, repeats: int, top: int) -> dict:
    """Wall time per call after two warm-up calls, then one profiled call: kernel count and top operators."""
    for _ in range(2):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    wall = (time.perf_counter() - t0) / repeats
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events = prof.key_averages()
    if device.type == "cuda":
        key = "self_device_time_total"
        kernels = sum(e.count for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
    else:
        key = "self_cpu_time_total"
        kernels = sum(e.count for e in events if e.key.startswith("aten::"))
    rows = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:top]
    total = sum(getattr(e, key, 0.0) for e in events) or 1.0
    return {
        "s_per_call": round(wall, 5),
        "kernels_per_call" if device.type == "cuda" else "ops_per_call": int(kernels),
        "top": [{"op": e.key[:80], "calls": e.count, "self_ms": round(getattr(e, key, 0.0) / 1e3, 3),
                 "share": round(getattr(e, key, 0.0) / total, 3)} for e in rows],
    }


def main(argv=None) -> int:
    tune_allocator()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=default_device())
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--frames", type=int, default=2400, help="U-Net / vocoder window (frames)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cfg = load_config()
    torch.manual_seed(0)
    model = GradSVC(cfg.grad).to(device)
    out: dict = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                 else "cpu", "torch": torch.__version__, "cases": {}}

    # one training step of the trainer's shapes (items of max_frames, decoder segments of segment_frames)
    b, t = args.batch_size, int(cfg.data.max_frames)
    mel = torch.randn(b, cfg.grad.n_mels, t, device=device) - 5.0
    lengths = torch.full((b,), t, device=device, dtype=torch.long)
    vec = torch.randn(b, t, cfg.grad.n_vecs, device=device)
    pit = torch.rand(b, t, device=device) * 300 + 100
    spk = torch.nn.functional.normalize(torch.randn(b, cfg.grad.spk_dim, device=device), dim=-1)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    segment = int(cfg.train.segment_frames)
    for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        def step(precision=precision):
            optim.zero_grad(set_to_none=True)
            with autocast_context(device, precision):
                losses = model.compute_loss(mel, lengths, vec, pit, spk, out_size=segment, use_decoder=True)
            sum(losses.values()).backward()
            optim.step()

        model.train()
        out["cases"][f"train_step_{precision}_b{b}"] = measure(step, device, args.repeats, args.top)

    # one decoder U-Net call and one vocoder window at inference
    model.eval()
    est = model.decoder.estimator
    n = args.frames
    x, mu = torch.randn(1, cfg.grad.n_mels, n, device=device), torch.randn(1, cfg.grad.n_mels, n, device=device)
    mask, s64 = torch.ones(1, 1, n, device=device), torch.randn(1, cfg.grad.n_embs, device=device)
    tt = torch.tensor(0.5, device=device)
    from bigvgan.model import Generator

    voc = Generator().to(device).eval()
    voc.remove_weight_norm()
    with torch.inference_mode():
        har = voc.harmonic_source(torch.full((1, n), 220.0, device=device))
        vmel = torch.randn(1, cfg.grad.n_mels, n, device=device) - 5.0
        for precision in ("fp32", "fp16") if device.type == "cuda" else ("fp32",):
            def unet(precision=precision):
                with autocast_context(device, precision):
                    est(x, mask, mu, tt, s64)

            def vocoder(precision=precision):
                with autocast_context(device, precision):
                    voc.decode(vmel, har)

            out["cases"][f"unet_{precision}_{n}frames"] = measure(unet, device, args.repeats, args.top)
            out["cases"][f"vocoder_{precision}_{n}frames"] = measure(vocoder, device, max(1, args.repeats // 2),
                                                                     args.top)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
