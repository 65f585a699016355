"""Reading GradSVC checkpoints: the official ``gvc.pretrain.pth``, the original's training files, and ours.

Formats accepted (all via ``torch.load(weights_only=True)``):
* official (both versions): ``{'model': state_dict}``;
* the original trainer's ``grad_svc_N.pt``: ``{'model', 'optim', 'epoch', 'steps'}``;
* ours: ``{'model': state_dict, 'config': plain dict, 'version': 'v2' | 'v3', ...}``;
* a bare state dict (keys ``pit_emb.weight``, ...), with or without a ``module.`` prefix.
V2 and V3 state dicts have identical keys, so the version comes from the config (``configs/v2.yaml`` for V2
files that carry none) and is checked against the file's own ``version`` when it has one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from common.checkpoint import CheckpointError, load_checkpoint, load_state_report, strip_prefix
from common.config import config_from_dict, load_config
from grad.model import GradSVC

log = logging.getLogger(__name__)

TRAINING_ONLY_PREFIXES = ("encoder.speaker.",)  # the GRL speaker classifier: unused at inference


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_gvc_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None, dict]:
    """-> (state_dict, config dict or None, meta). meta: {"format": "ours" | "training" | "official" | "flat",
    "version": str | None, "epoch", "steps" (when stored)}. Errors are one-line ``CheckpointError``s naming the file.
    """
    obj = load_checkpoint(path, kind="gvc")
    if isinstance(obj, Mapping) and "model" in obj:
        state = obj["model"]
        if not _is_state_dict(state):
            raise CheckpointError(f"{path}: 'model' is not a state dict of tensors")
        cfg = obj.get("config")
        if cfg is not None and not isinstance(cfg, Mapping):
            raise CheckpointError(f"{path}: 'config' is not a dict")
        if cfg is not None:
            fmt = "ours"
        elif "optim" in obj or "epoch" in obj:
            fmt = "training"
        else:
            fmt = "official"
        meta = {"format": fmt, "version": obj.get("version")}
        for key in ("epoch", "steps"):
            if key in obj:
                meta[key] = obj[key]
        return strip_prefix(state, "module."), (dict(cfg) if cfg is not None else None), meta
    if _is_state_dict(obj):
        return strip_prefix(obj, "module."), None, {"format": "flat", "version": None}
    raise CheckpointError(f"{path}: not a GradSVC checkpoint (expected a dict with a 'model' state dict)")


def check_model_kind(source: str | Path, version, stored_cfg: Mapping | None, gcfg) -> None:
    """``CheckpointError`` when a checkpoint's stored ``version`` (or its stored config's ``grad.decoder``) is not
    the one of ``gcfg``: V2 and V3 files have the same keys, so only these say score weights are not flow weights."""
    if version is not None and str(version) != str(gcfg.version):
        raise CheckpointError(f"{source}: checkpoint is version {version} but the config says {gcfg.version} "
                              f"(V2 and V3 files have the same keys; pass the matching config)")
    decoder = ((stored_cfg or {}).get("grad") or {}).get("decoder")
    if decoder is not None and str(decoder) != str(gcfg.decoder):
        raise CheckpointError(f"{source}: checkpoint has a {decoder} decoder but the config says {gcfg.decoder}")


def load_gvc_model(path: str | Path, cfg=None, device: str | torch.device = "cpu",
                   for_training: bool = False) -> tuple[GradSVC, object]:
    """Build a ``GradSVC`` and load ``path`` into it; returns (model, full config).

    The config is the checkpoint's own when it has one, else ``cfg``, else ``configs/base.yaml`` (V3). Every model
    key must be in the file (``encoder.speaker.*`` may be missing unless ``for_training``); shapes must match;
    unused file keys are logged. The model is in eval mode unless ``for_training``; for inference its U-Net runs
    the CPU inference forward when the config's ``infer.cpu_kernels`` says so (``grad.estimator_cpu``).
    """
    state, cfg_dict, meta = read_gvc_checkpoint(path)
    passed = cfg is not None
    if cfg_dict is not None:
        if cfg is not None:
            log.info("%s: using the config stored in the checkpoint, not the one passed", path)
        try:
            cfg = config_from_dict(cfg_dict)
        except Exception as exc:  # ConfigError or omegaconf validation errors: both mean a bad stored config
            raise CheckpointError(f"{path}: stored config is invalid: {str(exc).splitlines()[0]}") from None
    elif cfg is None:
        cfg = load_config()
    check_model_kind(path, meta.get("version"), cfg_dict, cfg.grad)
    model = GradSVC(cfg.grad, cpu_kernels=bool(cfg.infer.cpu_kernels) and not for_training)
    # for inference the file's tensors are taken as they are (no copy; its nn.Embedding rules out build_loaded)
    load_state_report(model, state, str(path), allow_missing=() if for_training else TRAINING_ONLY_PREFIXES,
                      assign=not for_training)
    model.to(device)
    model.train(for_training)
    log.info("%s: loaded %s checkpoint as %s (decoder %s): %s", path, meta["format"], cfg.grad.version,
             cfg.grad.decoder, version_reason(cfg_dict, meta, passed))
    return model, cfg


def version_reason(cfg_dict: dict | None, meta: dict, passed: bool) -> str:
    """Why a loaded checkpoint was taken as V2 or V3 (official files carry no version: V2 and V3 keys are equal)."""
    if cfg_dict is not None or meta.get("version") is not None:
        return "the version stored in the file"
    if passed:
        return ("the config passed (the file stores no version: V2 = 20230920 release needs -c configs/v2.yaml, "
                "V3 = 20230930)")
    return ("assumed from configs/base.yaml, V3 = the 20230930 release (the file stores no version; a V2 file of "
            "20230920 needs -c configs/v2.yaml)")
