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

This file holds the command line and the loop; building the run, exact-resume checkpoints, data checks and
validation are in ``training/``, the process group in ``common.distributed``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from common.checkpoint import CheckpointError
from common.config import BASE_CONFIG, ConfigError, apply_overlays, config_from_dict, load_config, to_dict
from common.distributed import DistEnv, any_rank, close_distributed, init_distributed
from common.features import FeatureError
from common.io import DiskFullError
from common.runtime import tune_allocator
from grad.data import EpochTagged
from training.checkpoints import read_resume, refuse_other_run, save_checkpoint
from training.checks import DataProblems, check_pretrained
from training.state import TrainState, autocast_context, build_state, make_loader, to_device, weighted_total
from training.validation import load_vocoder, validate

log = logging.getLogger(__name__)

EXIT_DATA = 2  # bad config, filelist or checkpoint
EXIT_NONFINITE = 3


class NonFiniteLoss(RuntimeError):
    """A loss or gradient norm became NaN / infinite (the message names the step)."""


# ----------------------------------------------------------------------------------------------------------------
# command line, config


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


# ----------------------------------------------------------------------------------------------------------------
# one step


def train_step(state: TrainState, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimizer step: weighted losses, backward, per-part grad-norm clip (encoder, decoder), Adam.

    Returns the losses, ``total`` and the grad norms as floats. Raises ``NonFiniteLoss`` (before the optimizer
    step, so the weights stay those of the last good step) when the loss or, in fp32, a grad norm is not finite.
    """
    cfg = state.cfg.train
    batch = to_device(batch, state.device)
    state.optim.zero_grad(set_to_none=True)
    with autocast_context(state.device, cfg.precision):
        losses = state.net(batch, out_size=state.segment, use_decoder=state.use_decoder)
    total = weighted_total(losses, cfg.loss_weights)
    bad, stop = any_rank(state.dist, [not bool(torch.isfinite(total)), state.stop_signal != 0], state.device)
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
        close_distributed(env)


if __name__ == "__main__":
    sys.exit(main())
