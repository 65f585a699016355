"""Training throughput of gvc_trainer.py on synthetic features; prints JSON.

    python bench/bench_train.py                      # base config, batch 8, fp32 (+ bf16 on CUDA)
    python bench/bench_train.py --steps 5 --precision fp32 bf16 fp16 --out bench_train.json

Per precision: data loading alone (DataLoader + collate, batches/s), the bare optimizer step on one resident batch
(``train_step``: forward, backward, clip, Adam), and the trainer loop (``train`` with ``--max-steps``: loading,
step, logging), all at the config's full decoder-loss phase. Feature files are random with the shapes and rates of
real ones (items up to ``data.max_frames`` frames). No assertions: numbers only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.config import REPO_ROOT, load_config
from common.runtime import default_device, synchronize, tune_allocator

log = logging.getLogger(__name__)


def load_trainer():
    """gvc_trainer.py is a script at the repository root, not a package module: import it by path."""
    spec = importlib.util.spec_from_file_location("gvc_trainer", REPO_ROOT / "gvc_trainer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gvc_trainer"] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


def write_features(root: Path, n_items: int, lengths: tuple[int, int], seed: int = 0) -> list[str]:
    """Random feature files with real frame relations (T_vec = T // 2, T_pit = T + 3); returns filelist lines."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_items):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        p = {k: root / f"item{i:03d}.{k}{ext}" for k, ext in (("mel", ".pt"), ("vec", ".npy"), ("pit", ".npy"),
                                                               ("spk", ".npy"))}
        torch.save(torch.from_numpy((rng.standard_normal((100, n)) - 5.0).astype(np.float32)), p["mel"])
        np.save(p["vec"], rng.standard_normal((n // 2, 256)).astype(np.float32))
        np.save(p["pit"], rng.uniform(100.0, 600.0, n + 3))
        np.save(p["spk"], (rng.standard_normal(256) / 16.0).astype(np.float32))
        lines.append("|".join(str(p[k]) for k in ("mel", "vec", "pit", "spk")))
    return lines



def bench_data(tr, state, n_batches: int) -> dict:
    """DataLoader + collate alone (the trainer's loader, its workers)."""
    it = tr.batches(state)
    next(it)  # worker start-up is not part of the steady rate
    t0 = time.perf_counter()
    n = 0
    for _ in range(n_batches):
        try:
            next(it)
        except StopIteration:
            break
        n += 1
    dt = time.perf_counter() - t0
    b = state.cfg.train.batch_size
    return {"batches": n, "s_per_batch": dt / max(n, 1), "batches_per_s": n / dt if dt else None,
            "samples_per_s": n * b / dt if dt else None}


def bench_step(tr, state, batch, steps: int, warmup: int) -> dict:
    """The bare optimizer step on one resident batch."""
    for _ in range(warmup):
        tr.train_step(state, batch)
    synchronize(state.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.train_step(state, batch)
    synchronize(state.device)
    dt = time.perf_counter() - t0
    b = state.cfg.train.batch_size
    return {"steps": steps, "s_per_step": dt / steps, "steps_per_s": steps / dt, "samples_per_s": steps * b / dt}


def bench_loop(tr, state, steps: int) -> dict:
    """``train(state, max_steps)``: loading + step + logging; the final checkpoint write is timed apart.

    Also paired, step by step: the time inside ``train_step`` against the interval between the starts of
    consecutive steps (the same batches; the first interval, which includes loader start-up, is left out). Their
    ratio is the loop's overhead over the bare step at steady state."""
    starts: list[float] = []
    inside: list[float] = []
    step_fn = tr.train_step

    def timed_step(st, batch):
        synchronize(st.device)
        t = time.perf_counter()
        starts.append(t)
        out = step_fn(st, batch)
        synchronize(st.device)
        inside.append(time.perf_counter() - t)
        return out

    tr.train_step = timed_step
    try:
        synchronize(state.device)
        t0 = time.perf_counter()
        tr.train(state, max_steps=steps)
        synchronize(state.device)
        total = time.perf_counter() - t0
    finally:
        tr.train_step = step_fn
    t1 = time.perf_counter()
    tr.save_checkpoint(state)
    save_s = time.perf_counter() - t1
    dt = max(total - save_s, 1e-9)
    b = state.cfg.train.batch_size
    out = {"steps": steps, "s_per_step": dt / steps, "steps_per_s": steps / dt, "samples_per_s": steps * b / dt,
           "checkpoint_save_s": save_s, "first_step_s": starts[1] - starts[0] if len(starts) > 1 else None}
    if len(starts) > 2:
        intervals = np.diff(starts[1:])
        out["steady_s_per_step"] = float(np.mean(intervals))
        out["steady_step_inside_s"] = float(np.mean(inside[1:-1]))
        out["steady_loop_vs_step"] = float(np.mean(intervals) / np.mean(inside[1:-1]))
    return out


def run_one(tr, args, precision: str, device: torch.device, work: Path) -> dict:
    lines = write_features(work / "feat", args.items, (args.min_len, args.max_len))
    (work / "train.txt").write_text("\n".join(lines[2:]) + "\n")
    (work / "valid.txt").write_text("\n".join(lines[:2]) + "\n")
    overrides = [f"train.train_files={work / 'train.txt'}", f"train.valid_files={work / 'valid.txt'}",
                 f"train.log_dir={work / ('logs_' + precision)}", f"train.batch_size={args.batch_size}",
                 f"train.precision={precision}", "train.fast_epochs=0", "train.full_epochs=1000000",
                 "train.test_step=1000000", "train.save_step=1000000", "train.log_step=1"]
    if args.workers is not None:
        overrides.append(f"train.num_workers={args.workers}")
    cfg = load_config(*args.config, overrides=overrides)
    state = tr.build_state(cfg, tr.DistEnv(), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = bench_data(tr, state, args.data_batches)
    batch = next(iter(tr.batches(state)))
    step = bench_step(tr, state, batch, args.steps, args.warmup)
    loop = bench_loop(tr, state, args.steps)
    if state.writer is not None:
        state.writer.close()
    out = {"precision": precision, "batch_size": cfg.train.batch_size, "frames_per_item": int(batch["mel"].shape[2]),
           "decoder_segment": state.segment, "num_workers": cfg.train.num_workers, "data": data, "step": step,
           "loop": loop, "loop_vs_step": loop["s_per_step"] / step["s_per_step"]}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    tune_allocator()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", nargs="*", default=[str(REPO_ROOT / "configs" / "base.yaml")])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps (bare step and loop each; >= 3 for the "
                   "steady-state loop ratio)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--data-batches", type=int, default=4)
    p.add_argument("--items", type=int, default=66, help="synthetic items (2 of them for validation)")
    p.add_argument("--min-len", type=int, default=300)
    p.add_argument("--max-len", type=int, default=600)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default train.num_workers)")
    p.add_argument("--device", default=default_device())
    p.add_argument("--precision", nargs="*", default=None, help="default fp32 on CPU, fp32 bf16 on CUDA")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or not 1 <= args.min_len <= args.max_len:
        p.error("--steps and --batch-size must be >= 1, and 1 <= --min-len <= --max-len")
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    precisions = args.precision or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    tr = load_trainer()
    results = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(),
               # fp32 convolutions / matmuls on CUDA use TF32 tensor cores when these are on (torch defaults:
               # cudnn on, matmul off): the fp32 baseline the bf16 speed-up is measured against
               "tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                        "matmul": torch.backends.cuda.matmul.allow_tf32},
               "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            try:
                results["runs"].append(run_one(tr, args, precision, device, Path(tmp) / precision))
            except (tr.DataProblems, tr.ConfigError) as exc:  # e.g. --min-len below data.min_frames: no items
                print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
                return 2
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
