"""Training checkpoints and exact resume: a resumed run continues with the weights, optimizer, loss scaler, random
streams (every rank's) and sampler position of the uninterrupted one.

Files are ``<log_dir>/grad_svc_<epoch>.pt`` after a whole epoch (the original's names) and
``grad_svc_<epoch>_step<steps>.pt`` within one, written atomically; the last ``train.keep_checkpoints`` are kept.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from common.checkpoint import CheckpointError, load_checkpoint, load_state_report
from common.config import ConfigError, to_dict
from common.distributed import gather_objects
from common.io import save_torch
from grad.checkpoint import check_model_kind

if TYPE_CHECKING:
    from training.state import TrainState

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "grad_svc"  # the original's file names: logs/grad_svc/grad_svc_<epoch>.pt


# ----------------------------------------------------------------------------------------------------------------
# random streams


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


def rng_neutral(device: torch.device):
    """A block whose random draws leave the training run's streams (CPU, and ``device``'s on CUDA) as they were."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


# ----------------------------------------------------------------------------------------------------------------
# file names


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


# ----------------------------------------------------------------------------------------------------------------
# save and restore


def save_checkpoint(state: TrainState) -> Path | None:
    """Write ``{'model', 'optim', 'epoch', 'steps', 'config', 'version', 'scaler', 'rng', 'data_state'}``
    atomically (rank 0), keep the last ``train.keep_checkpoints``. All ranks must call it (RNG gather)."""
    rngs = gather_objects(state.dist, rng_state(state.device))
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
