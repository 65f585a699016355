"""The feature files of ``data_gvc/`` and their conventions, in one place (docs/conventions.md#feature-files).

| file | content |
|---|---|
| ``mel/<singer>/<name>.mel.pt``   | torch float32 ``[100, T_mel]``, natural-log mel, 100 frames/s |
| ``hubert/<singer>/<name>.vec.npy`` | float32 ``[T_vec, 256]``, HuBERT-soft units, 50 frames/s |
| ``pitch/<singer>/<name>.pit.npy``  | float64 ``[T_pit]``, Hz (0 = unvoiced), 100 frames/s, ~3 more than mel |
| ``speaker/<singer>/<name>.spk.npy`` | float32 ``[256]`` |

Read by preprocess_train / preprocess_zzz, the training dataset and inference alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURE_DIRS = {"mel": ("mel", ".mel.pt"), "vec": ("hubert", ".vec.npy"), "pit": ("pitch", ".pit.npy"),
                "spk": ("speaker", ".spk.npy")}
# |2 T_vec - T_mel| and |T_pit - T_mel| beyond these mean the files do not describe the same audio
MAX_VEC_MEL_DIFF = 4
MAX_PIT_MEL_DIFF = 6


class FeatureError(ValueError):
    """A feature file that is missing, unreadable or inconsistent (one line naming the file)."""


@dataclass(frozen=True)
class FeatureItem:
    mel: Path
    vec: Path
    pit: Path
    spk: Path

    def line(self) -> str:
        """The filelist line ``mel|vec|pit|spk`` (files/train.txt)."""
        return "|".join(str(p) for p in (self.mel, self.vec, self.pit, self.spk))

    @classmethod
    def parse(cls, line: str, source: str = "filelist") -> FeatureItem:
        parts = line.strip().split("|")
        if len(parts) != 4:
            raise FeatureError(f"{source}: expected 'mel|vec|pit|spk', got {line.strip()!r}")
        return cls(*(Path(p) for p in parts))


def item_for(data_root: str | Path, singer: str, name: str) -> FeatureItem:
    root = Path(data_root)
    return FeatureItem(**{k: root / d / singer / f"{name}{ext}" for k, (d, ext) in FEATURE_DIRS.items()})


def read_mel(path: str | Path, n_mels: int = 100) -> np.ndarray:
    import torch

    try:
        mel = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
        from common.checkpoint import describe_load_error

        raise FeatureError(f"{path}: cannot read mel: {describe_load_error(exc)}") from None
    if not isinstance(mel, torch.Tensor) or mel.dim() != 2 or mel.shape[0] != n_mels:
        raise FeatureError(f"{path}: expected a [{n_mels}, T] tensor, got {getattr(mel, 'shape', type(mel))}")
    return mel.float().numpy()


def _read_npy(path: str | Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        if "pickled" in msg:  # numpy's guess for any file without the .npy header
            msg = "not a .npy array file"
        raise FeatureError(f"{path}: cannot read {what} ({msg})") from None


def read_vec(path: str | Path, dim: int = 256) -> np.ndarray:
    vec = _read_npy(path, "units")
    if vec.ndim != 2 or vec.shape[1] != dim:
        raise FeatureError(f"{path}: expected units [T, {dim}], got {vec.shape}")
    return vec.astype(np.float32, copy=False)


def read_pit(path: str | Path) -> np.ndarray:
    pit = _read_npy(path, "pitch")
    if pit.ndim != 1:
        raise FeatureError(f"{path}: expected pitch [T], got {pit.shape}")
    return pit.astype(np.float64, copy=False)


def read_spk(path: str | Path, dim: int = 256) -> np.ndarray:
    spk = _read_npy(path, "speaker embedding")
    if spk.shape != (dim,):
        raise FeatureError(f"{path}: expected a speaker embedding of shape ({dim},), got {spk.shape}")
    return spk.astype(np.float32, copy=False)


def check_item(item: FeatureItem, n_mels: int = 100, dim: int = 256) -> tuple[list[str], int]:
    """Problems of one item (missing files, dims, non-finite values, inconsistent lengths) and its mel length."""
    problems = [f"{p}: missing" for p in (item.mel, item.vec, item.pit, item.spk) if not Path(p).is_file()]
    if problems:
        return problems, 0
    try:
        mel, vec = read_mel(item.mel, n_mels), read_vec(item.vec, dim)
        pit, spk = read_pit(item.pit), read_spk(item.spk, dim)
    except FeatureError as exc:
        return [str(exc)], 0
    for path, arr in ((item.mel, mel), (item.vec, vec), (item.pit, pit), (item.spk, spk)):
        if not np.isfinite(arr).all():
            problems.append(f"{path}: contains NaN or infinite values")
    if (pit < 0).any():
        problems.append(f"{item.pit}: negative F0 values")
    t_mel = mel.shape[1]
    if abs(2 * vec.shape[0] - t_mel) > MAX_VEC_MEL_DIFF:
        problems.append(f"{item.vec}: {vec.shape[0]} units (x2 = {2 * vec.shape[0]}) do not match "
                        f"{t_mel} mel frames of {item.mel}")
    if abs(pit.shape[0] - t_mel) > MAX_PIT_MEL_DIFF:
        problems.append(f"{item.pit}: {pit.shape[0]} F0 frames do not match {t_mel} mel frames of {item.mel}")
    return problems, t_mel


def read_filelist(path: str | Path) -> list[FeatureItem]:
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"{path}: filelist not found (run prepare/preprocess_train.py)")
    items = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            items.append(FeatureItem.parse(line, f"{path}:{i}"))
    return items
