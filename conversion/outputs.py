"""A conversion's files: the song (int16 wav), the F0 check wav and the mel image beside it, all written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.audio import write_wav
from conversion.converter import Conversion
from conversion.progress import log_rss


def companion_paths(out: Path) -> tuple[Path, Path]:
    """The F0 check wav and mel image beside ``out`` (``gvc_out.wav`` -> ``gvc_pitch.wav``, ``gvc_out.mel.png``)."""
    stem = out.stem
    pitch_stem = stem[: -len("_out")] + "_pitch" if stem.endswith("_out") else stem + "_pitch"
    return out.with_name(pitch_stem + ".wav"), out.with_name(stem + ".mel.png")


def save_mel_image(mel: torch.Tensor, path: Path) -> None:
    """The mel ``[n_mels, T]`` as a PNG image beside the song, written atomically (``common.plots``)."""
    from common.plots import save_mel_png

    save_mel_png(mel.float().cpu().numpy(), path)


def write_song(path: str | Path, wav: np.ndarray, sr: int) -> None:
    """A converted song (float32 ``[N]``) as an int16 wav: the vocoder's x 32768 (the original's), converted a piece
    at a time (the whole song's float temporaries were 5x its int16 size); written atomically."""
    from bigvgan.model import to_int16

    pcm = np.empty(len(wav), dtype=np.int16)
    for a in range(0, len(pcm), 1 << 20):
        pcm[a: a + (1 << 20)] = to_int16(torch.from_numpy(wav[a: a + (1 << 20)])).numpy()
    write_wav(path, pcm, sr)


def write_outputs(conv: Conversion, out: Path, sr: int, pitch_wav: np.ndarray | None, png: bool) -> None:
    """``out`` (the song as int16 at ``sr``), and beside it (``companion_paths``) the F0 check wav when given and the
    mel image when ``png``."""
    write_song(out, conv.wav, sr)
    log_rss("write")
    pitch_path, png_path = companion_paths(out)
    if pitch_wav is not None:
        write_wav(pitch_path, pitch_wav, sr)
    if png:
        save_mel_image(conv.mel, png_path)
        log_rss("png")
