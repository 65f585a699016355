"""Vocode a mel + F0 pair into a 32 kHz WAV (the original's ``bigvgan/inference.py``).

    python bigvgan/inference.py --mel x.mel.pt --pit x.pit.npy --out x.wav
        [--model bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth] [--vocoder bigvgan|world|griffinlim] [--device cpu]

``--mel``: a ``.mel.pt`` (float tensor ``[100, T]``, natural-log mel, 10 ms frames) or a ``.npy`` of that shape.
``--pit``: F0 in Hz per 10 ms frame (0 = unvoiced) as ``.pit.npy`` / ``.npy`` or the editable pitch CSV of
``pitch/inference.py``. If the two lengths differ the shorter one is used (with a warning). ``--vocoder
world`` (WORLD, F0 exact) and ``griffinlim`` (ignores F0, preview quality) need no checkpoint. Output: int16 WAV
at ``data.sampling_rate``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from bigvgan.griffinlim import griffinlim_vocode
from bigvgan.model import DEFAULT_CHECKPOINT, GeneratorConfig, load_bigvgan, to_int16, vocode
from common.audio import write_wav
from common.checkpoint import CheckpointError
from common.config import ConfigError, load_config
from common.runtime import default_device, tune_allocator

log = logging.getLogger(__name__)


class InputError(ValueError):
    """A mel or pitch file that cannot be used (one line naming the file)."""


def load_mel_file(path: str | Path, n_mels: int) -> torch.Tensor:
    """``.mel.pt`` / ``.pt`` (``torch.save`` of a tensor) or ``.npy`` -> float32 ``(n_mels, T)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: mel file not found")
    try:
        if path.suffix == ".npy":
            mel = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            mel = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / numpy format errors all mean "not a mel file"
        raise InputError(f"{path}: cannot read mel ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(mel, torch.Tensor):
        raise InputError(f"{path}: expected a tensor, found {type(mel).__name__}")
    if mel.dim() == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.dim() != 2 or mel.shape[0] != n_mels:
        raise InputError(f"{path}: mel must have shape ({n_mels}, T), got {tuple(mel.shape)}")
    mel = mel.float()
    if not torch.isfinite(mel).all():
        raise InputError(f"{path}: mel contains NaN or infinite values")
    return mel


def load_pitch_file(path: str | Path) -> np.ndarray:
    """``.pit.npy`` / ``.npy`` or a pitch CSV -> float64 ``(T,)`` Hz (0 = unvoiced)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        from pitch.csv_io import PitchCsvError, load_csv_pitch

        try:
            return load_csv_pitch(path)
        except PitchCsvError as exc:
            raise InputError(str(exc)) from None
    if not path.is_file():
        raise InputError(f"{path}: pitch file not found")
    try:
        f0 = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError / OSError / UnpicklingError for non-npy content
        raise InputError(f"{path}: cannot read pitch ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    f0 = np.asarray(f0, dtype=np.float64).squeeze()
    if f0.ndim != 1:
        raise InputError(f"{path}: pitch must be one value per frame, got shape {np.shape(f0)}")
    if not np.isfinite(f0).all() or (f0 < 0).any():
        raise InputError(f"{path}: pitch contains NaN, infinite or negative values")
    return f0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="mel + F0 -> 32 kHz WAV with NSF-BigVGAN (or Griffin-Lim)")
    parser.add_argument("--mel", required=True, help="log-mel [100, T]: .mel.pt or .npy")
    parser.add_argument("--pit", required=True, help="F0 per 10 ms frame: .pit.npy / .npy or a pitch CSV")
    parser.add_argument("--out", required=True, help="output WAV")
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT,
                        help="official NSF-BigVGAN checkpoint (generator under 'model_g')")
    parser.add_argument("--vocoder", choices=("bigvgan", "world", "griffinlim"), default="bigvgan",
                        help="no checkpoint needed: world (WORLD, follows the F0 exactly) or griffinlim (preview "
                             "quality, ignores F0)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the source noise (default: unseeded)")
    parser.add_argument("--chunk", type=int, default=None, help="frames per vocoder window (infer.vocoder_chunk)")
    parser.add_argument("-c", "--config", default=None, help="config overlay (data.* and infer.* are read)")
    return parser


def main(argv: list[str] | None = None) -> None:
    tune_allocator()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        mel = load_mel_file(args.mel, cfg.data.mel_channels)
        f0 = load_pitch_file(args.pit)
    except (ConfigError, InputError) as exc:
        sys.exit(f"error: {exc}")
    n = min(mel.shape[1], f0.shape[0])
    if mel.shape[1] != f0.shape[0]:
        log.warning("mel has %d frames, pitch %d: using the first %d", mel.shape[1], f0.shape[0], n)
    mel, f0_t = mel[:, :n], torch.from_numpy(f0[:n]).float()
    if args.chunk is not None and args.chunk < 1:
        sys.exit(f"error: --chunk {args.chunk}: at least 1 frame")
    chunk = args.chunk or cfg.infer.vocoder_chunk
    overlap = min(cfg.infer.vocoder_overlap, chunk)
    if args.vocoder == "griffinlim":
        audio = torch.from_numpy(griffinlim_vocode(mel, cfg.data, chunk=chunk, overlap=overlap))
    elif args.vocoder == "world":
        from bigvgan.world import world_vocode

        audio = torch.from_numpy(world_vocode(mel, f0[:n], cfg.data, chunk=chunk, overlap=overlap))
    else:
        device = default_device(args.device)
        try:
            model = load_bigvgan(args.model, device, config=GeneratorConfig.from_data_config(cfg.data))
        except (CheckpointError, ValueError) as exc:
            sys.exit(f"error: {exc}")
        gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
        audio = torch.from_numpy(vocode(model, mel, f0_t, chunk=chunk, overlap=overlap, noise_generator=gen))
    write_wav(args.out, to_int16(audio).numpy(), cfg.data.sampling_rate)
    print(f"{args.out}: {n} frames -> {audio.shape[0]} samples at {cfg.data.sampling_rate} Hz ({args.vocoder})")


if __name__ == "__main__":
    main()
