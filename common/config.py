"""One typed config for every audio and model setting.

``configs/base.yaml`` holds the original's values; overlays (``configs/tiny.yaml``, ...) hold only the keys that
change. ``load_config`` merges them over the dataclass schema below, so a misspelled key or a wrong type is an
error that names the key, not a silent default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO_ROOT / "configs" / "base.yaml"
# frames per second of the mel, the F0 and the (repeated) units; fixed by the pretrained feature models: HuBERT-soft
# gives 16000 / 320 = 50 units/s, repeated x2 (hubert.model.SAMPLE_RATE, HOP), F0 frames are 10 ms (pitch.f0.HOP)
FRAME_RATE = 100

# Keys of earlier configs (our checkpoints store the whole config): renamed ones are read under their new name,
# removed ones are dropped; each with a logged note. A removed key that mirrored a constant must hold its value.
RENAMED_KEYS = {"grad.n_spks": "grad.spk_dim"}
REMOVED_KEYS: dict[str, tuple[Any, str]] = {
    "data.segment_size": (None, "nothing reads it (the original's vocoder training segment)"),
    "data.max_wav_value": (None, "int16 full scale is a constant (bigvgan.model.MAX_WAV_VALUE)"),
    "data.content_sampling_rate": (16000, "fixed by HuBERT-soft (hubert.model.SAMPLE_RATE)"),
    "data.content_hop": (320, "fixed by HuBERT-soft (hubert.model.HOP)"),
    "data.pitch_hop": (160, "the 10 ms F0 frames at 16 kHz (pitch.f0.HOP)"),
}


@dataclass
class TrainConfig:
    seed: int = 37
    train_files: str = "files/train.txt"
    valid_files: str = "files/valid.txt"
    log_dir: str = "logs/grad_svc"
    full_epochs: int = 500
    fast_epochs: int = 100
    learning_rate: float = 2e-4
    batch_size: int = 8
    test_size: int = 4
    test_step: int = 5
    save_step: int = 10
    pretrain: str = ""
    freeze: list[str] = field(default_factory=list)
    segment_frames: int = 200
    grad_clip: float = 1.0
    keep_checkpoints: int = 5
    num_workers: int = 2
    precision: str = "fp32"
    log_step: int = 10
    synth_steps: int = 50
    vocoder: str = ""
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"prior": 1.0, "diff": 1.0, "mel": 1.0, "spk": 1.0}
    )


@dataclass
class DataConfig:
    sampling_rate: int = 32000
    filter_length: int = 1024
    hop_length: int = 320
    win_length: int = 1024
    mel_channels: int = 100
    mel_fmin: float = 40.0
    mel_fmax: float = 16000.0
    min_frames: int = 250
    max_frames: int = 500
    f0_method: str = "praat"
    speaker_backend: str = "lstm"


@dataclass
class GradConfig:
    version: str = "v3"
    decoder: str = "flow"
    n_mels: int = 100
    n_vecs: int = 256
    n_pits: int = 256
    spk_dim: int = 256
    n_embs: int = 64
    n_enc_channels: int = 192
    filter_channels: int = 512
    dec_dim: int = 96
    beta_min: float = 0.05
    beta_max: float = 20.0
    pe_scale: int = 1000
    sigma_min: float = 1e-4
    sampler: str = "euler"
    n_timesteps: int = 10
    temperature: float = 1.015


@dataclass
class InferConfig:
    out_chunk: int = 2400
    hop_frame: int = 8
    vocoder_chunk: int = 2400
    vocoder_overlap: int = 32
    batch_windows: int = 1
    cpu_kernels: bool = True


@dataclass
class GVCConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    grad: GradConfig = field(default_factory=GradConfig)
    infer: InferConfig = field(default_factory=InferConfig)


class ConfigError(ValueError):
    """A config file that does not fit the schema (the message names the file and key)."""


def upgrade_legacy_keys(extra: Any, source: str) -> Any:
    """``extra`` (a config mapping) with the keys of earlier configs renamed or dropped (``RENAMED_KEYS``,
    ``REMOVED_KEYS``), one logged line naming them; ``ConfigError`` when a removed key holds another value than the
    constant it mirrored, or an old and a new name disagree."""
    if not isinstance(extra, (dict, DictConfig)):
        return extra
    extra = OmegaConf.create(extra) if isinstance(extra, dict) else extra
    notes = []
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".")
        node, new_key = extra.get(section), new.split(".")[1]
        if isinstance(node, DictConfig) and key in node:
            value = node.pop(key)
            if new_key in node and node[new_key] != value:
                raise ConfigError(f"{source}: {old} ({value}) and its new name {new} ({node[new_key]}) disagree")
            node[new_key] = value
            notes.append(f"{old} read as {new}")
    for old, (fixed, why) in REMOVED_KEYS.items():
        section, key = old.split(".")
        node = extra.get(section)
        if isinstance(node, DictConfig) and key in node:
            value = node.pop(key)
            if fixed is not None and value != fixed:
                raise ConfigError(f"{source}: {old} = {value} cannot be set: it is {fixed}, {why}")
            notes.append(f"{old} ignored ({why})")
    if notes:
        log.info("%s: keys of an earlier config: %s", source, "; ".join(notes))
    return extra


def _merge(base: DictConfig, extra: Any, source: str) -> DictConfig:
    extra = upgrade_legacy_keys(extra, source)
    try:
        return OmegaConf.merge(base, extra)
    except Exception as exc:  # omegaconf raises several error types; all mean "does not fit the schema"
        raise ConfigError(f"{source}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None


def load_config(*overlays: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- configs/base.yaml <- each overlay in order <- ``key=value`` overrides.

    An overlay path equal to base.yaml is skipped, so ``-c configs/base.yaml`` (the original's flag) works.
    """
    cfg = OmegaConf.structured(GVCConfig)
    cfg = _merge(cfg, OmegaConf.load(BASE_CONFIG), str(BASE_CONFIG))
    cfg = apply_overlays(cfg, *overlays)
    if overrides:
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command-line overrides")
    validate(cfg)
    return cfg


def apply_overlays(cfg: DictConfig, *overlays: str | Path) -> DictConfig:
    """``cfg`` <- each overlay file in order (empty paths and configs/base.yaml are skipped); not validated."""
    for path in overlays:
        if path is None or str(path) == "":
            continue
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        if p.resolve() == BASE_CONFIG.resolve():
            continue
        cfg = _merge(cfg, OmegaConf.load(p), str(p))
    return cfg


def config_from_dict(d: dict | DictConfig) -> DictConfig:
    """Rebuild a checked config from the plain dict stored inside one of our checkpoints."""
    cfg = _merge(OmegaConf.structured(GVCConfig), d, "checkpoint config")
    validate(cfg)
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    """Plain nested dict (for checkpoints and logs)."""
    return OmegaConf.to_container(cfg, resolve=True)


def validate(cfg: DictConfig) -> None:
    g = cfg.grad
    if g.version not in ("v2", "v3"):
        raise ConfigError(f"grad.version must be 'v2' or 'v3', got {g.version!r}")
    if g.decoder not in ("flow", "score", "rectified"):
        raise ConfigError(f"grad.decoder must be flow, score or rectified, got {g.decoder!r}")
    for key in ("batch_size", "log_step", "test_step", "save_step", "full_epochs"):
        if int(cfg.train[key]) < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {cfg.train[key]}")
    i = cfg.infer
    if i.hop_frame < 0 or i.out_chunk < max(1, 2 * i.hop_frame):
        raise ConfigError(f"infer.out_chunk ({i.out_chunk}) must be at least 2 x infer.hop_frame ({i.hop_frame}) "
                          f"and hop_frame >= 0: neighbouring windows crossfade over 2 x hop_frame frames")
    if i.vocoder_chunk < 1 or i.vocoder_overlap < 0 or i.batch_windows < 1:
        raise ConfigError("infer.vocoder_chunk and infer.batch_windows must be >= 1, infer.vocoder_overlap >= 0")
    if cfg.train.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision must be fp32, bf16 or fp16, got {cfg.train.precision!r}")
    d = cfg.data
    if d.sampling_rate // d.hop_length != FRAME_RATE:
        raise ConfigError(f"data: mel frames (sampling_rate / hop_length = {d.sampling_rate} / {d.hop_length}) must "
                          f"be {FRAME_RATE} per second, the rate of the F0 and unit frames")
    if g.n_mels != d.mel_channels:
        raise ConfigError(f"grad.n_mels ({g.n_mels}) must equal data.mel_channels ({d.mel_channels}): the acoustic "
                          f"model predicts the mel of the features")
