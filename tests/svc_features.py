"""Small, consistent feature sets (``.mel.pt`` / ``.vec.npy`` / ``.pit.npy`` / ``.spk.npy`` + filelists) for the
data, trainer and export tests. Frame counts follow docs/conventions.md#feature-files for an audio of ``n`` mel frames:
``T_vec = n // 2``, ``T_pit = n + 3``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def write_item(root: Path, name: str, n: int, spk: np.ndarray, rng: np.random.Generator,
               t_vec: int | None = None, t_pit: int | None = None) -> str:
    """Write one item of ``n`` mel frames; returns its filelist line ``mel|vec|pit|spk``."""
    t_vec = n // 2 if t_vec is None else t_vec
    t_pit = n + 3 if t_pit is None else t_pit
    t = np.arange(t_pit)
    f0 = 220.0 * 2 ** (rng.integers(0, 12) / 12) * (1 + 0.02 * np.sin(2 * np.pi * t / 20.0))
    f0[rng.random(t_pit) < 0.1] = 0.0  # some unvoiced frames
    bands = np.linspace(0.0, 1.0, 100)[:, None]
    mel = -6.0 + 2.0 * np.sin(2 * np.pi * (bands * 3 + np.arange(n)[None, :] / 37.0))
    mel = mel + 0.1 * rng.standard_normal((100, n))
    vec = rng.standard_normal((t_vec, 256)).astype(np.float32)
    paths = {"mel": root / f"{name}.mel.pt", "vec": root / f"{name}.vec.npy", "pit": root / f"{name}.pit.npy",
             "spk": root / f"{name}.spk.npy"}
    torch.save(torch.from_numpy(mel.astype(np.float32)), paths["mel"])
    np.save(paths["vec"], vec)
    np.save(paths["pit"], np.round(f0, 1).astype(np.float64))
    np.save(paths["spk"], spk.astype(np.float32))
    return "|".join(str(paths[k]) for k in ("mel", "vec", "pit", "spk"))


def write_feature_set(root: Path, n_train: int = 6, n_valid: int = 2, seed: int = 0,
                      lengths: tuple[int, int] = (80, 150)) -> tuple[Path, Path]:
    """``n_train`` + ``n_valid`` items of 80-150 frames from 2 speakers; returns (train.txt, valid.txt)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    speakers = [rng.standard_normal(256) for _ in range(2)]
    speakers = [0.8 * s / np.linalg.norm(s) for s in speakers]
    lines = []
    for i in range(n_train + n_valid):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        lines.append(write_item(root, f"s{i % 2}_{i:02d}", n, speakers[i % 2], rng))
    train, valid = root / "train.txt", root / "valid.txt"
    train.write_text("\n".join(lines[:n_train]) + "\n", encoding="utf-8")
    valid.write_text("\n".join(lines[n_train:]) + "\n", encoding="utf-8")
    return train, valid


def load_script(name: str):
    """Import a script of the repository root (gvc_trainer.py, gvc_export.py) as a module, by path."""
    import importlib.util
    import sys

    from common.config import REPO_ROOT

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


def cut_song(src: Path, dst: Path, start_s: float, end_s: float) -> Path:
    """``[start_s, end_s)`` of a corpus wav written to ``dst`` at its own rate (a short song for the CLI tests)."""
    import soundfile as sf

    x, sr = sf.read(src, dtype="float32")
    sf.write(dst, x[int(start_s * sr): int(end_s * sr)], sr)
    return dst


def random_singer(path: Path, seed: int = 0) -> Path:
    """A unit-length random 256-d speaker vector saved as ``path`` (a ``.spk.npy``)."""
    v = np.random.default_rng(seed).standard_normal(256).astype(np.float32)
    np.save(path, v / np.linalg.norm(v))
    return path
