"""What a training run holds (``TrainState``) and how it is built: datasets and sampler, the model with its
fine-tuning weights and frozen parts, the optimizer and loss scaler, TensorBoard, then the resumed position; the
small helpers every step uses (autocast, batches to the device, the weighted loss)."""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from common.checkpoint import load_state_report
from common.config import ConfigError
from common.distributed import DistEnv
from grad.checkpoint import check_model_kind, read_gvc_checkpoint
from grad.data import EpochSampler, SVCDataset, collate
from grad.model import GradSVC
from grad.utils import fix_len_compatibility
from training.checkpoints import restore
from training.checks import DataProblems, check_data, record_speaker_backend

log = logging.getLogger(__name__)


def autocast_context(device: torch.device, precision: str):
    """bf16 / fp16 autocast on CUDA; a no-op context on CPU or in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """Everything a training run holds; ``epoch`` is 1-based (the original's numbering)."""

    cfg: DictConfig
    model: GradSVC
    net: nn.Module  # what a training step calls: the model, or DistributedDataParallel around it
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
    check_data(cfg, env, device)
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
    state = TrainState(cfg, model, model, optim, scaler, train_set, valid_set, sampler, device, env, log_dir, writer)
    if resume is not None:
        restore(state, resume, lr_explicit)
    seed_rank = cfg.train.seed + env.rank
    if resume is None or "rng" not in resume:
        seed_everything(seed_rank + state.steps)
    if env.active:
        from torch.nn.parallel import DistributedDataParallel

        # the decoder gets no gradient while its loss is off: DDP must then look for unused parameters
        state.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=not state.use_decoder)
    return state


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
