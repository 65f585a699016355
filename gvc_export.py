"""Export a training checkpoint for inference: ``python gvc_export.py --checkpoint_path logs/grad_svc/grad_svc_500.pt``.

Writes ``gvc.pth`` (the original's output name) in the official layout ``{'model': state_dict}`` that the original
``gvc_inference.py`` reads, plus our ``'config'`` and ``'version'`` keys beside it. The optimizer, scaler and RNG
states are dropped; the training-only speaker classifier (``encoder.speaker.*``) is kept so the file stays a complete
official-format file (it can also seed a fine-tune).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from common.checkpoint import CheckpointError, load_state_report
from common.config import BASE_CONFIG, ConfigError, apply_overlays, config_from_dict, load_config, to_dict, validate
from common.io import DiskFullError, save_torch
from grad.checkpoint import check_model_kind, read_gvc_checkpoint
from grad.model import GradSVC

log = logging.getLogger(__name__)


def export_checkpoint(src: str | Path, dst: str | Path, config: list[str] | None = None) -> dict:
    """Write the inference checkpoint of ``src`` to ``dst``; returns what was written.

    The config is the one stored in ``src`` (our training checkpoints) with the ``config`` overlays on top (say, other
    inference defaults; the model's version and decoder cannot change), or, for the original's checkpoints which
    carry none, ``config`` overlays over configs/base.yaml. Settings recorded at training (``data.speaker_backend``)
    stay unless an overlay names them. The weights are checked against a model built from that config (every key,
    every shape) before anything is written.
    """
    state, cfg_dict, meta = read_gvc_checkpoint(src)
    if cfg_dict is not None:
        stored = config_from_dict(cfg_dict)
        cfg = apply_overlays(stored.copy(), *(config or []))
        validate(cfg)
        check_model_kind(src, meta.get("version"), cfg_dict, cfg.grad)
        before = to_dict(stored)
        changed = sorted(k for k, v in to_dict(cfg).items() if v != before.get(k))
        if changed:
            log.info("%s: stored config with -c %s on top (sections changed: %s)", src, " ".join(config),
                     ", ".join(changed))
    elif config:
        cfg = load_config(*config)
    else:
        log.info("%s: no config inside; using %s", src, BASE_CONFIG)
        cfg = load_config(BASE_CONFIG)
    model = GradSVC(cfg.grad)
    load_state_report(model, state, str(src))
    # the model's own key order and contiguous CPU copies: no views into the optimizer-laden source
    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    out = {"model": weights, "config": to_dict(cfg), "version": cfg.grad.version}
    save_torch(dst, out, durable=True)
    n = sum(v.numel() for k, v in weights.items() if not k.startswith("encoder.speaker."))
    log.info("wrote %s: %d tensors, %.2fM parameters used at inference (+ encoder.speaker, training-only)",
             dst, len(weights), n / 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Export a Grad-SVC training checkpoint for inference.")
    p.add_argument("-p", "--checkpoint_path", required=True, help="training checkpoint (logs/grad_svc/grad_svc_*.pt)")
    p.add_argument("--out", default="gvc.pth", help="output file (default gvc.pth, as the original)")
    p.add_argument("-c", "--config", action="append", default=None,
                   help="config overlay(s): over the checkpoint's stored config, or over configs/base.yaml for the "
                        "original's checkpoints (which store none)")
    args = p.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        export_checkpoint(args.checkpoint_path, args.out, args.config)
    except (CheckpointError, ConfigError, DiskFullError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
