"""Train Grad-SVC: ``python gvc_trainer.py [-c configs/base.yaml ...] [-p logs/grad_svc/grad_svc_10.pt]``.

The original's schedule (PlayVoice/Grad-SVC ``grad_extend/train.py``): epochs 1..``full_epochs``; the decoder
(diffusion / flow) loss is off during the first ``fast_epochs`` epochs; Adam; the encoder's and the decoder's
gradients are each clipped to norm ``grad_clip``; a checkpoint every ``save_step`` epochs; a preview synthesis every
``test_step`` epochs. Differences, all explicit: fine-tuning happens only when ``train.pretrain`` / ``--finetune``
names a file (the original did it whenever its default file existed, silently setting the learning rate to 2e-5
and freezing layers; here the learning rate and ``train.freeze`` come from the config and are logged); a resumed
run continues after the saved step instead of repeating the saved epoch; the decoder loss starts exactly at epoch
``fast_epochs + 1`` (the original's switch came one epoch later, or earlier after a resume).

Multi-GPU / multi-process: ``torchrun --nproc_per_node N gvc_trainer.py ...`` (gloo on CPU, nccl on CUDA); only
rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoint import CheckpointError, Pretrained, load_checkpoint, load_state_report, require_pretrained
from common.config import BASE_CONFIG, ConfigError, apply_overlays, config_from_dict, load_config, to_dict
from common.features import FeatureError
from common.io import DiskFullError, save_torch
from common.plots import mel_rgb
from common.runtime import default_device, tune_allocator
from grad.checkpoint import check_model_kind, read_gvc_checkpoint
from grad.data import EpochSampler, EpochTagged, SVCDataset, check_filelist, collate
from grad.model import GradSVC
from grad.utils import fix_len_compatibility

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "grad_svc"  # the original's file names: logs/grad_svc/grad_svc_<epoch>.pt
EXIT_DATA = 2  # bad config, filelist or checkpoint
EXIT_NONFINITE = 3


class NonFiniteLoss(RuntimeError):
    """A loss or gradient norm became NaN / infinite (the message names the step)."""


class DataProblems(ValueError):
    """Feature files that would fail or poison training (the message lists them)."""


# ----------------------------------------------------------------------------------------------------------------
# command line, config, devices


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train Grad-SVC.")
    p.add_argument("-c", "--config", action="append", default=None,
                   help="config file; several are overlaid in order (default configs/base.yaml, or the config "
                        "stored in the -p checkpoint)")
    p.add_argument("-p", "--checkpoint_path", default=None, help="resume from this training checkpoint")
    p.add_argument("-n", "--name", default=None,
                   help="run name: logs go to <parent of train.log_dir>/<name> (default: train.log_dir, "
                        "logs/grad_svc)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimizer steps in this run and write a checkpoint")
    p.add_argument("--device", default=None, help="torch device (default cuda when present, else cpu)")
    p.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="overrides train.precision (autocast; CUDA only)")
    p.add_argument("--finetune", default=None, metavar="PATH",
                   help="start from these weights (same as train.pretrain; lr and train.freeze from the config)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.batch_size=4")
    return p.parse_intermixed_args(argv)


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= _flat_keys(v, key + ".") if isinstance(v, dict) and k != "loss_weights" else {key}
    return out


def build_config(args: argparse.Namespace, resume: dict | None) -> DictConfig:
    """-c overlays, then key=value overrides, then flags; on resume (-p) over the checkpoint's own config, so only
    the keys the user names explicitly change (logged), learning rate and freeze list included."""
    overrides = list(args.overrides)
    for key, value in (("train.seed", args.seed), ("train.precision", args.precision),
                       ("train.pretrain", args.finetune)):
        if value is not None:
            overrides.append(f"{key}={value}")
    args.explicit_keys = set()
    if resume is not None and isinstance(resume.get("config"), dict):
        log.info("config: the one stored in %s", args.checkpoint_path)
        stored = config_from_dict(resume["config"])
        try:
            cfg = apply_overlays(stored, *(args.config or []))
            explicit: set[str] = set()
            for path in args.config or []:
                if Path(path).resolve() != BASE_CONFIG.resolve():
                    explicit |= _flat_keys(OmegaConf.to_container(OmegaConf.load(path)) or {})
            if overrides:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
                explicit |= {o.split("=", 1)[0] for o in overrides}
            cfg = config_from_dict(to_dict(cfg))
        except ConfigError:
            raise
        except Exception as exc:  # omegaconf's several error types all mean "does not fit the schema"
            raise ConfigError(f"command-line overrides: {str(exc).splitlines()[0]}") from None
        args.explicit_keys = explicit
        changed = [k for k in sorted(explicit) if OmegaConf.select(stored, k) != OmegaConf.select(cfg, k)]
        for key in changed:
            log.info("resume: %s = %s overrides the checkpoint's %s", key, OmegaConf.select(cfg, key),
                     OmegaConf.select(stored, key))
    else:
        cfg = load_config(*(args.config or [BASE_CONFIG]), overrides=overrides)
        if resume is not None:  # the original's checkpoint: its learning rate comes from its optimizer state
            args.explicit_keys = {o.split("=", 1)[0] for o in overrides} | (
                {"train.learning_rate"} if args.config else set())
    if args.name:
        cfg.train.log_dir = str(Path(cfg.train.log_dir).parent / args.name)
    return cfg


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device_arg: str | None) -> tuple[DistEnv, torch.device]:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group (nccl on CUDA, gloo on CPU)."""
    env = DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                  int(os.environ.get("LOCAL_RANK", 0)))
    name = default_device(device_arg)
    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", env.local_rank if env.active else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if env.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return env, device


def autocast_context(device: torch.device, precision: str):
    """bf16 / fp16 autocast on CUDA; a no-op context on CPU or in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# state


class LossModule(nn.Module):
    """Routes ``forward`` to ``GradSVC.compute_loss``: DDP synchronises gradients only for calls of ``forward``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], out_size: int | None, use_decoder: bool):
        return self.model.compute_loss(batch["mel"], batch["lengths"], batch["vec"], batch["pit"], batch["spk"],
                                       out_size=out_size, use_decoder=use_decoder)


@dataclass
class TrainState:
    """Everything a training run holds; ``epoch`` is 1-based (the original's numbering)."""

    cfg: DictConfig
    model: GradSVC
    loss_module: nn.Module
    optim: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_set: SVCDataset
    valid_set: SVCDataset | None
    sampler: EpochSampler
    device: torch.device
    dist: DistEnv
    log_dir: Path
    writer: object | None = None
    loader: DataLoader | None = None  # the training loader (persistent workers), made on first use
    epoch: int = 1  # the epoch being trained
    batch_in_epoch: int = 0  # batches of ``epoch`` already trained
    steps: int = 0  # optimizer steps since the start of training
    stop_signal: int = 0  # a signal this process received
    stop_requested: bool = False  # all ranks agreed to stop after the current step
    logged_ground_truth: bool = False
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_count: int = 0

    @property
    def use_decoder(self) -> bool:
        """The original's schedule: decoder loss off for the first ``fast_epochs`` epochs."""
        return self.epoch > self.cfg.train.fast_epochs

    @property
    def segment(self) -> int:
        return fix_len_compatibility(self.cfg.train.segment_frames)


def check_data(cfg: DictConfig, env: DistEnv) -> None:
    """Rank 0 checks both filelists; any problem stops every rank with the list (exit 2)."""
    problems: list[str] = []
    if env.is_main:
        problems += check_filelist(cfg.train.train_files, cfg)
        problems += check_filelist(cfg.train.valid_files, cfg, allow_empty=True)  # no validation then (a warning)
    if env.active:
        flag = torch.tensor([len(problems)], dtype=torch.long)
        dist.broadcast(flag, 0)
        if int(flag) and not problems:
            raise DataProblems("rank 0 found problems in the feature files")
    if problems:
        shown = "\n  ".join(problems[:50]) + (f"\n  ... ({len(problems)} in all)" if len(problems) > 50 else "")
        raise DataProblems(f"{len(problems)} problem(s) in the training data; fix or remove these items "
                           f"(prepare/preprocess_zzz.py checks them too):\n  {shown}")


def record_speaker_backend(cfg: DictConfig) -> None:
    """Set ``data.speaker_backend`` from the ``backend.json`` tags of the training embeddings (stored in every
    checkpoint, so inference refuses a ``--spk`` of another encoder); embeddings of two encoders are refused."""
    from common.features import read_filelist
    from speaker.backends import read_backend_tag

    found: dict[str, str] = {}
    for path in (cfg.train.train_files, cfg.train.valid_files):
        for item in read_filelist(path):
            folder = str(item.spk.parent)
            if folder not in found:
                found[folder] = read_backend_tag(item.spk)
    tags = {t for t in found.values() if t}
    if len(tags) > 1:
        mixed = ", ".join(f"{f} ({t})" for f, t in sorted(found.items()) if t)
        raise DataProblems(f"speaker embeddings of different encoders in the filelists: {mixed}; recompute them with "
                           f"one --backend")
    if tags:
        tag = tags.pop()
        if tag != cfg.data.speaker_backend:
            log.info("speaker embeddings were made by '%s' (backend.json): data.speaker_backend set to it", tag)
        cfg.data.speaker_backend = tag


def apply_pretrain(model: GradSVC, cfg: DictConfig) -> None:
    """Fine-tuning: load ``train.pretrain`` (official ``{'model': sd}`` or ours); missing keys are an error."""
    path = cfg.train.pretrain
    state, stored_cfg, meta = read_gvc_checkpoint(path)
    check_model_kind(path, meta.get("version"), stored_cfg, cfg.grad)
    # the speaker classifier is training-only: a file without it still fine-tunes (the classifier starts fresh)
    missing, _ = load_state_report(model, state, str(path), allow_missing=("encoder.speaker.",))
    log.info("fine-tuning from %s (%d tensors loaded%s); learning rate %g", path, len(state),
             f", {len(missing)} training-only keys fresh" if missing else "", cfg.train.learning_rate)
    # official files carry no config: they were trained on the LSTM encoder's embeddings
    trained_on = ((stored_cfg or {}).get("data") or {}).get("speaker_backend") or "lstm"
    if trained_on != cfg.data.speaker_backend:
        frozen = [p for p in cfg.train.freeze if p == "spk_emb" or str(p).startswith("spk_emb.")]
        log.warning("%s was trained on '%s' speaker embeddings, these features are '%s': the speaker projection "
                    "must learn the new space%s", path, trained_on, cfg.data.speaker_backend,
                    " (train.freeze keeps spk_emb fixed: drop it from train.freeze)" if frozen else "")


def apply_freeze(model: GradSVC, prefixes: list[str]) -> None:
    """Freeze the parameters under each prefix of ``train.freeze`` (module names of the state dict)."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        hit = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hit:
            raise ConfigError(f"train.freeze: no parameters under {prefix!r}")
        for name, p in model.named_parameters():
            if name in hit:
                p.requires_grad_(False)
        log.info("frozen: %s (%d tensors)", prefix, len(hit))


def make_loader(dataset: SVCDataset, cfg: DictConfig, device: torch.device, sampler=None, batch_size=None,
                generator_seed: int = 0, persistent: bool = False) -> DataLoader:
    workers = cfg.train.num_workers
    return DataLoader(dataset, batch_size=batch_size or cfg.train.batch_size, sampler=sampler, shuffle=False,
                      collate_fn=collate, drop_last=sampler is not None, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=persistent and workers > 0,
                      # the loader draws its worker seed from this generator, never from the global RNG (exact resume)
                      generator=torch.Generator().manual_seed(generator_seed))


def build_state(cfg: DictConfig, env: DistEnv, device: torch.device, resume: dict | None = None,
                lr_explicit: bool = False) -> TrainState:
    """Datasets, model (+ fine-tune weights, frozen parts), optimizer, scaler, writer; then the resumed state."""
    check_data(cfg, env)
    record_speaker_backend(cfg)
    seed_everything(cfg.train.seed + env.rank)
    train_set = SVCDataset(cfg.train.train_files, cfg, train=True)
    valid_set = SVCDataset(cfg.train.valid_files, cfg, train=False) if env.is_main else None
    sampler = EpochSampler(len(train_set), cfg.train.seed, cfg.train.batch_size, shuffle=True, rank=env.rank,
                           world_size=env.world_size)
    if sampler.batches_per_epoch == 0:
        raise DataProblems(f"{cfg.train.train_files}: {len(train_set)} usable items are fewer than one batch of "
                           f"{cfg.train.batch_size} per rank ({env.world_size} ranks)")
    if valid_set is not None and len(valid_set) == 0:
        log.warning("%s: no usable validation items; validation is skipped", cfg.train.valid_files)
        valid_set = None

    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = GradSVC(cfg.grad)
    if cfg.train.pretrain and resume is None:
        apply_pretrain(model, cfg)
    elif cfg.train.pretrain:
        log.info("resuming: train.pretrain (%s) is not loaded again", cfg.train.pretrain)
    apply_freeze(model, list(cfg.train.freeze))
    model.to(device)
    log.info("parameters: encoder %.2fM, decoder %.2fM, trainable %.2fM",
             _count(model.encoder) / 1e6, _count(model.decoder) / 1e6,
             sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    # all parameters, as the original (frozen ones never get a gradient): its optimizer files stay loadable
    optim = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.train.precision == "fp16")

    log_dir = Path(cfg.train.log_dir)
    writer = None
    if env.is_main:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(log_dir=str(log_dir))
    state = TrainState(cfg, model, LossModule(model), optim, scaler, train_set, valid_set, sampler, device, env,
                       log_dir, writer)
    if resume is not None:
        restore(state, resume, lr_explicit)
    seed_rank = cfg.train.seed + env.rank
    if resume is None or "rng" not in resume:
        seed_everything(seed_rank + state.steps)
    if env.active:
        from torch.nn.parallel import DistributedDataParallel

        # the decoder gets no gradient while its loss is off: DDP must then look for unused parameters
        state.loss_module = DistributedDataParallel(
            state.loss_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not state.use_decoder)
    return state


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def rng_state(device: torch.device) -> dict:
    """This process's RNG states (torch, numpy, python, cuda) as tensors / plain values (weights_only loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
             "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(gauss),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng(state: TrainState) -> list[dict]:
    """Every rank's RNG states, in rank order (a collective in DDP: all ranks call it)."""
    mine = rng_state(state.device)
    if not state.dist.active:
        return [mine]
    out: list = [None] * state.dist.world_size
    dist.all_gather_object(out, mine)
    return out


def checkpoint_name(epoch: int, batch_in_epoch: int, steps: int) -> str:
    """``grad_svc_<epoch>.pt`` after a whole epoch (the original's name), ``grad_svc_<epoch>_step<steps>.pt`` within."""
    if batch_in_epoch == 0:
        return f"{CHECKPOINT_PREFIX}_{epoch - 1}.pt"
    return f"{CHECKPOINT_PREFIX}_{epoch}_step{steps}.pt"


_NAME_RE = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)(?:_step(\d+))?\.pt$")


def checkpoint_order(path: Path) -> tuple[int, int, int] | None:
    """Sort key (completed epochs, within-epoch, steps) of one of our checkpoint names, None for other files."""
    m = _NAME_RE.match(path.name)
    if not m:
        return None
    epoch, steps = int(m.group(1)), m.group(2)
    return (epoch, 0, 0) if steps is None else (epoch - 1, 1, int(steps))


def list_checkpoints(log_dir: Path) -> list[Path]:
    """Our checkpoints in ``log_dir``, oldest first."""
    found = [(checkpoint_order(p), p) for p in Path(log_dir).glob(f"{CHECKPOINT_PREFIX}_*.pt")]
    return [p for key, p in sorted((k, p) for k, p in found if k is not None)]


def refuse_other_run(log_dir: Path) -> None:
    """A fresh run into a log folder that holds another run's checkpoints would overwrite them (``grad_svc_1.pt``)
    and mix the TensorBoard logs: ``ConfigError`` naming ``-n NAME`` and ``-p``."""
    found = list_checkpoints(log_dir)
    if found:
        raise ConfigError(f"{log_dir}: holds another run's checkpoints (latest {found[-1].name}); start a new run "
                          f"with -n NAME (logs go to {log_dir.parent / 'NAME'}) or resume that one with -p {found[-1]}")


def check_pretrained(cfg: DictConfig, resume: dict | None) -> None:
    """The fine-tuning start and the validation vocoder, before any work: all missing files named at once."""
    files = []
    if cfg.train.pretrain and resume is None:
        files.append(Pretrained(cfg.train.pretrain, "gvc", "--finetune PATH (or train.pretrain=PATH)"))
    if cfg.train.vocoder:
        files.append(Pretrained(cfg.train.vocoder, "bigvgan", "train.vocoder=PATH",
                                "train.vocoder=null (validation without audio)"))
    require_pretrained(files)


def save_checkpoint(state: TrainState) -> Path | None:
    """Write ``{'model', 'optim', 'epoch', 'steps', 'config', 'version', 'scaler', 'rng', 'data_state'}``
    atomically (rank 0), keep the last ``train.keep_checkpoints``. All ranks must call it (RNG gather)."""
    rngs = gather_rng(state)
    if not state.dist.is_main:
        return None
    completed = state.epoch - 1 if state.batch_in_epoch < state.sampler.batches_per_epoch else state.epoch
    ckpt = {
        "model": state.model.state_dict(),
        "optim": state.optim.state_dict(),
        "epoch": completed,  # whole epochs done, as the original's 'epoch'
        "steps": state.steps,
        "config": to_dict(state.cfg),
        "version": state.cfg.grad.version,  # what grad.checkpoint checks against the config
        "scaler": state.scaler.state_dict(),
        "rng": {"world_size": state.dist.world_size, "states": rngs},
        "data_state": {"epoch": state.epoch, "batch": state.batch_in_epoch, "seed": state.cfg.train.seed,
                       "world_size": state.dist.world_size, "batch_size": state.cfg.train.batch_size},
    }
    path = state.log_dir / checkpoint_name(state.epoch, state.batch_in_epoch, state.steps)
    save_torch(path, ckpt, durable=True)
    log.info("saved %s (epoch %d, step %d)", path, state.epoch if state.batch_in_epoch else state.epoch - 1,
             state.steps)
    keep = state.cfg.train.keep_checkpoints
    if keep > 0:
        # the last `keep` written (modification time, then training position): after a resume from an older
        # checkpoint, the abandoned run's later-named files go first, never the one just written
        written = sorted(list_checkpoints(state.log_dir), key=lambda p: p.stat().st_mtime_ns)
        for old in [p for p in written if p != path][: max(0, len(written) - keep)]:
            old.unlink(missing_ok=True)
            log.info("removed old checkpoint %s", old)
    return path


def read_resume(path: str) -> dict:
    """A training checkpoint (ours, or the original's ``{'model', 'optim', 'epoch', 'steps'}``)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'model' entry)")
    if "optim" not in ckpt:
        raise CheckpointError(f"{path}: has no optimizer state; to start from its weights use --finetune {path}")
    return ckpt


def restore(state: TrainState, ckpt: dict, lr_explicit: bool = False) -> None:
    """Model, optimizer, scaler, position and (when present) RNG states from a training checkpoint."""
    stored_cfg = ckpt.get("config")
    check_model_kind("resume checkpoint", ckpt.get("version"), stored_cfg if isinstance(stored_cfg, dict) else None,
                     state.cfg.grad)
    load_state_report(state.model, ckpt["model"], "resume checkpoint")
    try:
        state.optim.load_state_dict(ckpt["optim"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"resume checkpoint: optimizer state does not fit the model ({exc})") from None
    # the original keeps the optimizer state's learning rate; an explicit train.learning_rate replaces it
    for group in state.optim.param_groups:
        if lr_explicit and group["lr"] != state.cfg.train.learning_rate:
            log.info("learning rate %g (checkpoint had %g)", state.cfg.train.learning_rate, group["lr"])
            group["lr"] = state.cfg.train.learning_rate
        elif group["lr"] != state.cfg.train.learning_rate:
            log.info("learning rate %g from the checkpoint's optimizer state", group["lr"])
            state.cfg.train.learning_rate = group["lr"]
    if ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    state.steps = int(ckpt.get("steps", 0))
    data = ckpt.get("data_state")
    if data is not None:
        state.epoch, state.batch_in_epoch = int(data["epoch"]), int(data["batch"])
        same = (data.get("world_size") == state.dist.world_size and data.get("batch_size") ==
                state.cfg.train.batch_size and data.get("seed") == state.cfg.train.seed)
        if state.batch_in_epoch and not same:
            log.warning("resume: batch size, seed or ranks changed; epoch %d restarts from its first batch",
                        state.epoch)
            state.batch_in_epoch = 0
    else:  # the original's checkpoint: 'epoch' epochs are done (it repeated that epoch; we go on)
        state.epoch, state.batch_in_epoch = int(ckpt.get("epoch", 0)) + 1, 0
    if state.batch_in_epoch >= state.sampler.batches_per_epoch:
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    rng = ckpt.get("rng")
    if rng is not None and rng.get("world_size") == state.dist.world_size:
        set_rng_state(rng["states"][state.dist.rank], state.device)
    elif rng is not None:
        log.warning("resume: the checkpoint holds RNG states of %s ranks, not %d; reseeding", rng.get("world_size"),
                    state.dist.world_size)
        ckpt.pop("rng")
    log.info("resumed at epoch %d, batch %d, step %d", state.epoch, state.batch_in_epoch, state.steps)


# ----------------------------------------------------------------------------------------------------------------
# one step, validation


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def weighted_total(losses: dict[str, torch.Tensor], weights) -> torch.Tensor:
    """``sum(weights[k] * losses[k])``: the weights are keyed like the logged losses."""
    total = None
    for key, value in losses.items():
        if key not in weights:
            raise ConfigError(f"train.loss_weights has no weight for the loss {key!r}")
        term = float(weights[key]) * value.float()
        total = term if total is None else total + term
    return total


def _any_rank(state: TrainState, flags: list[bool]) -> list[bool]:
    """OR of boolean flags over ranks (one small all-reduce per step in DDP)."""
    if not state.dist.active:
        return flags
    t = torch.tensor([float(f) for f in flags], device=state.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(x) for x in t.tolist()]


def train_step(state: TrainState, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimizer step: weighted losses, backward, per-part grad-norm clip (encoder, decoder), Adam.

    Returns the losses, ``total`` and the grad norms as floats. Raises ``NonFiniteLoss`` (before the optimizer
    step, so the weights stay those of the last good step) when the loss or, in fp32, a grad norm is not finite.
    """
    cfg = state.cfg.train
    batch = to_device(batch, state.device)
    state.optim.zero_grad(set_to_none=True)
    with autocast_context(state.device, cfg.precision):
        losses = state.loss_module(batch, state.segment, state.use_decoder)
    total = weighted_total(losses, cfg.loss_weights)
    bad, stop = _any_rank(state, [not bool(torch.isfinite(total)), state.stop_signal != 0])
    state.stop_requested = stop
    if stop and not state.stop_signal:
        state.stop_signal = signal.SIGTERM  # another rank was signalled: stop together
    if bad:
        values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
        raise NonFiniteLoss(f"step {state.steps + 1} (epoch {state.epoch}): loss is not finite ({values})")
    state.scaler.scale(total).backward()
    state.scaler.unscale_(state.optim)
    # the original clips the encoder's and the decoder's gradients separately (pit_emb / spk_emb unclipped)
    enc = torch.nn.utils.clip_grad_norm_([p for p in state.model.encoder.parameters() if p.requires_grad],
                                         cfg.grad_clip)
    dec = torch.nn.utils.clip_grad_norm_([p for p in state.model.decoder.parameters() if p.requires_grad],
                                         cfg.grad_clip)
    # every number of the step in one device-to-host copy (one sync on CUDA instead of one per value)
    keys = [*losses, "total", "grad_norm_encoder", "grad_norm_decoder"]
    # (an all-frozen part's norm is a CPU zero: moved to the loss device first)
    values = torch.stack([v.detach().float().to(total.device) for v in (*losses.values(), total, enc, dec)])
    values = values.tolist()
    out = dict(zip(keys, values))
    g_enc, g_dec = out["grad_norm_encoder"], out["grad_norm_decoder"]
    if not state.scaler.is_enabled() and not (math.isfinite(g_enc) and math.isfinite(g_dec)):
        raise NonFiniteLoss(f"step {state.steps + 1} (epoch {state.epoch}): gradient norm is not finite "
                            f"(encoder {g_enc:.4g}, decoder {g_dec:.4g})")
    state.scaler.step(state.optim)
    state.scaler.update()
    return out


def log_scalars(state: TrainState, values: dict[str, float]) -> None:
    """Average the last ``log_step`` steps into TensorBoard: loss/<key>, grad_norm/<part>, lr."""
    for k, v in values.items():
        state.loss_sums[k] = state.loss_sums.get(k, 0.0) + v
    state.loss_count += 1
    if state.writer is None or state.steps % state.cfg.train.log_step:
        return
    for k, v in state.loss_sums.items():
        tag = f"grad_norm/{k.removeprefix('grad_norm_')}" if k.startswith("grad_norm_") else f"loss/{k}"
        state.writer.add_scalar(tag, v / state.loss_count, state.steps)
    state.writer.add_scalar("lr", state.optim.param_groups[0]["lr"], state.steps)
    if state.scaler.is_enabled():
        state.writer.add_scalar("amp/scale", state.scaler.get_scale(), state.steps)
    state.loss_sums, state.loss_count = {}, 0


def validation_loss(state: TrainState) -> dict[str, float]:
    """Mean validation losses (eval mode, decoder loss on, fixed random segments and noise)."""
    model, cfg = state.model, state.cfg
    loader = make_loader(state.valid_set, cfg, state.device, batch_size=cfg.train.batch_size)
    sums: dict[str, float] = {}
    n = 0
    for batch in loader:
        if state.stop_signal:
            break
        batch = to_device(batch, state.device)
        with torch.no_grad(), autocast_context(state.device, cfg.train.precision):
            losses = model.compute_loss(batch["mel"], batch["lengths"], batch["vec"], batch["pit"], batch["spk"],
                                        out_size=state.segment, use_decoder=True)
        losses["total"] = weighted_total(losses, cfg.train.loss_weights)
        b = batch["mel"].shape[0]
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n += b
    return {k: v / n for k, v in sums.items()} if n else {}


def validation_synthesis(state: TrainState, vocoder) -> None:
    """Synthesise the first ``test_size`` validation items: mel images (and audio with a vocoder) in TensorBoard."""
    cfg = state.cfg
    gen = torch.Generator(device=state.device).manual_seed(cfg.train.seed)
    for i in range(min(cfg.train.test_size, len(state.valid_set))):
        if state.stop_signal:
            return
        item = collate([state.valid_set[i]])
        batch = to_device(item, state.device)
        out = state.model.synthesise(batch["vec"], batch["pit"], batch["spk"], lengths=batch["lengths"],
                                     n_timesteps=cfg.train.synth_steps, temperature=1.0, generator=gen)
        t = int(batch["lengths"][0])
        if not state.logged_ground_truth:
            state.writer.add_image(f"image_{i}/ground_truth", mel_rgb(item["mel"][0, :, :t].numpy()), 0,
                                   dataformats="HWC")
        for key, tag in (("mu", "generated_enc"), ("mel", "generated_dec")):
            mel = out[key][0, :, :t].float().cpu().numpy()
            state.writer.add_image(f"image_{i}/{tag}", mel_rgb(mel), state.steps, dataformats="HWC")
        if vocoder is not None:
            wav = vocoder(out["mel"][:, :, :t].float(), batch["pit"][:, :t])
            state.writer.add_audio(f"audio_{i}/generated", wav, state.steps, sample_rate=cfg.data.sampling_rate)
            if not state.logged_ground_truth:
                ref = vocoder(batch["mel"][:, :, :t], batch["pit"][:, :t])
                state.writer.add_audio(f"audio_{i}/ground_truth_vocoded", ref, 0,
                                       sample_rate=cfg.data.sampling_rate)
    state.logged_ground_truth = True


def load_vocoder(cfg: DictConfig, device: torch.device):
    """``f(mel [1, n_mels, T], f0 [1, T] Hz) -> wav [320 T] float32 in [-1, 1]`` from ``train.vocoder``, or None."""
    if not cfg.train.vocoder:
        return None
    try:
        from bigvgan.model import load_bigvgan, vocode
    except ImportError:
        log.warning("train.vocoder is set but bigvgan.model has no load_bigvgan / vocode: no validation audio")
        return None
    # building the generator draws its random initial weights: not from the training run's streams (rank 0 alone
    # loads it, and a resumed run must draw what the uninterrupted one drew)
    with rng_neutral(device):
        generator = load_bigvgan(cfg.train.vocoder, device=device)
    log.info("validation audio with the vocoder %s", cfg.train.vocoder)

    def run(mel: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        wav = vocode(generator, mel[0], f0[0], chunk=cfg.infer.vocoder_chunk, overlap=cfg.infer.vocoder_overlap,
                     noise_generator=noise)
        return torch.from_numpy(np.asarray(wav, dtype=np.float32)).clamp(-1.0, 1.0)

    return run


def rng_neutral(device: torch.device):
    """A block whose random draws leave the training run's streams (CPU, and ``device``'s on CUDA) as they were."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


def validate(state: TrainState, vocoder) -> dict[str, float]:
    """Validation loss and preview synthesis (rank 0). RNG-neutral: the training run's random streams are untouched."""
    if state.valid_set is None or state.writer is None:
        return {}
    state.model.eval()
    try:
        with rng_neutral(state.device):
            torch.manual_seed(state.cfg.train.seed)
            losses = validation_loss(state)
            for k, v in losses.items():
                state.writer.add_scalar(f"valid/{k}", v, state.steps)
            validation_synthesis(state, vocoder)
    finally:
        state.model.train()
    if losses:
        log.info("epoch %d validation: %s", state.epoch, ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    return losses


# ----------------------------------------------------------------------------------------------------------------
# the loop


def batches(state: TrainState) -> Iterator[dict[str, torch.Tensor]]:
    """The remaining batches of ``state.epoch`` (same items and windows as an uninterrupted run)."""
    state.sampler.set_epoch(state.epoch, skip_batches=state.batch_in_epoch)  # EpochTagged hands it to the dataset
    if state.loader is None:
        # one loader for the whole run: its workers start once, not every epoch (the epoch rides with each index;
        # the dataset draws nothing from the workers' global RNGs)
        state.loader = make_loader(state.train_set, state.cfg, state.device, sampler=EpochTagged(state.sampler),
                                   generator_seed=state.cfg.train.seed, persistent=True)
    yield from state.loader


def end_epoch(state: TrainState, vocoder, epoch_losses: dict[str, list[float]]) -> bool:
    """Epoch summary, validation every ``test_step`` epochs, checkpoint every ``save_step``; True if saved."""
    cfg = state.cfg.train
    if epoch_losses and state.dist.is_main:
        msg = " | ".join(f"{k} {np.mean(v):.4f}" for k, v in epoch_losses.items() if not k.startswith("grad"))
        log.info("epoch %d: %s", state.epoch, msg)
    if state.epoch % cfg.test_step == 0:
        validate(state, vocoder)
    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    if (state.epoch - 1) % cfg.save_step == 0 or state.epoch > cfg.full_epochs:
        save_checkpoint(state)
        return True
    return False


def train(state: TrainState, max_steps: int | None = None) -> int:
    """Run epochs until ``full_epochs``, ``max_steps`` steps of this run, or a signal. Returns the exit status."""
    cfg = state.cfg.train
    vocoder = load_vocoder(state.cfg, state.device) if state.dist.is_main else None
    run_steps = 0
    saved_at = -1
    log.info("training epochs %d..%d from step %d (decoder loss from epoch %d)", state.epoch, cfg.full_epochs,
             state.steps, cfg.fast_epochs + 1)
    while state.epoch <= cfg.full_epochs:
        epoch_losses: dict[str, list[float]] = {}
        bar = tqdm(batches(state), total=state.sampler.batches_per_epoch, initial=state.batch_in_epoch,
                   desc=f"epoch {state.epoch}", disable=not state.dist.is_main, leave=False)
        stop = False
        for batch in bar:
            try:
                values = train_step(state, batch)
            except NonFiniteLoss as exc:
                log.error("%s; stopping, the last checkpoint in %s is the last good state", exc, state.log_dir)
                return EXIT_NONFINITE
            state.steps += 1
            state.batch_in_epoch += 1
            run_steps += 1
            for k, v in values.items():
                epoch_losses.setdefault(k, []).append(v)
            log_scalars(state, values)
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if not k.startswith("grad")}, refresh=False)
            stop = state.stop_requested or (max_steps is not None and run_steps >= max_steps)
            if stop:
                break
        bar.close()
        if state.batch_in_epoch >= state.sampler.batches_per_epoch:
            if end_epoch(state, vocoder, epoch_losses):
                saved_at = state.steps
        if stop:
            if saved_at != state.steps:
                save_checkpoint(state)
            if state.stop_signal:
                log.warning("stopped by signal %d at step %d", state.stop_signal, state.steps)
                return 128 + int(state.stop_signal)
            log.info("stopped after %d steps of this run (step %d)", run_steps, state.steps)
            return 0
    log.info("training finished: %d epochs, %d steps", cfg.full_epochs, state.steps)
    return 0


@contextlib.contextmanager
def stop_on_signals(state_ref: list) -> Iterator[None]:
    """SIGINT / SIGTERM ask the loop to stop after the current step and save; a second Ctrl-C stops at once."""
    def handler(signum, frame):
        state = state_ref[0] if state_ref else None
        if state is None or (state.stop_signal and signum == signal.SIGINT):
            raise KeyboardInterrupt
        state.stop_signal = signum
        log.warning("signal %d: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)", signum)

    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def setup_logging(env: DistEnv, log_dir: Path | None) -> logging.Handler | None:
    """Console logging (rank 0 at INFO, others at WARNING) and ``<log_dir>/train.log`` on rank 0."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    root.setLevel(logging.INFO if env.is_main else logging.WARNING)
    if log_dir is None or not env.is_main:
        return None
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return handler


def main(argv: list[str] | None = None) -> int:
    tune_allocator()
    args = parse_args(argv)
    env, device = init_distributed(args.device)
    setup_logging(env, None)
    handler = None
    state_ref: list[TrainState] = []
    try:
        with stop_on_signals(state_ref):
            resume = read_resume(args.checkpoint_path) if args.checkpoint_path else None
            cfg = build_config(args, resume)
            if resume is None:
                refuse_other_run(Path(cfg.train.log_dir))
            check_pretrained(cfg, resume)
            handler = setup_logging(env, Path(cfg.train.log_dir))
            log.info("device %s, precision %s, %d rank(s), log dir %s", device, cfg.train.precision, env.world_size,
                     cfg.train.log_dir)
            if device.type != "cuda" and cfg.train.precision != "fp32":
                log.warning("precision %s applies on CUDA only: training in fp32 on %s", cfg.train.precision, device)
            state = build_state(cfg, env, device, resume, "train.learning_rate" in args.explicit_keys)
            state_ref.append(state)
            return train(state, args.max_steps)
    except (ConfigError, FeatureError, CheckpointError, DataProblems, DiskFullError) as exc:
        log.error("%s", exc)
        return EXIT_DATA
    except KeyboardInterrupt:
        log.warning("interrupted; the current step was not saved (the last checkpoint stays)")
        return 130
    finally:
        if state_ref and state_ref[0].writer is not None:
            state_ref[0].writer.close()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if env.active and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
