"""Checks a training run makes before any work: the feature files of both filelists, the speaker encoder that made
the embeddings, and the pretrained files the config names (all missing ones reported at once)."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from common.checkpoint import Pretrained, require_pretrained
from common.distributed import DistEnv, broadcast_count
from grad.data import check_filelist

log = logging.getLogger(__name__)


class DataProblems(ValueError):
    """Feature files that would fail or poison training (the message lists them)."""


def check_data(cfg: DictConfig, env: DistEnv, device: torch.device) -> None:
    """Rank 0 checks both filelists; any problem stops every rank with the list (exit 2)."""
    problems: list[str] = []
    if env.is_main:
        problems += check_filelist(cfg.train.train_files, cfg)
        problems += check_filelist(cfg.train.valid_files, cfg, allow_empty=True)  # no validation then (a warning)
    if broadcast_count(env, len(problems), device) and not problems:
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


def check_pretrained(cfg: DictConfig, resume: dict | None) -> None:
    """The fine-tuning start and the validation vocoder, before any work: all missing files named at once."""
    files = []
    if cfg.train.pretrain and resume is None:
        files.append(Pretrained(cfg.train.pretrain, "gvc", "--finetune PATH (or train.pretrain=PATH)"))
    if cfg.train.vocoder:
        files.append(Pretrained(cfg.train.vocoder, "bigvgan", "train.vocoder=PATH",
                                "train.vocoder=null (validation without audio)"))
    require_pretrained(files)
