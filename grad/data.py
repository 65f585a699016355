"""Training data: the feature files of a filelist as aligned, padded batches (docs/conventions.md#aligning-the-streams).

One item is the four files of a filelist line ``mel|vec|pit|spk`` (common/features.py):
mel ``[100, T_mel]`` at 100 frames/s, units ``[T_vec, 256]`` at 50 frames/s (repeated x2 to 100 frames/s),
F0 ``[T_pit]`` Hz at 100 frames/s, speaker ``[256]``. The streams are cut to one length
``min(T_pit, 2 T_vec - 2, T_mel)`` and, in training, to a random window of at most ``data.max_frames`` frames.
Unit perturbation (N(0, 1) noise) is applied inside the model, not here.

The order of the items and every random window depend only on (``train.seed``, epoch, item index), so a resumed run
reads exactly the batches an uninterrupted run would, with any number of DataLoader workers or ranks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from common.features import FeatureError, FeatureItem, check_item, read_filelist, read_mel, read_pit, read_spk, read_vec
from grad.utils import fix_len_compatibility

log = logging.getLogger(__name__)

# the original cuts 2 repeated unit frames off the end "for safe" (grad_extend/data.py); kept, see module docstring
UNIT_TAIL_FRAMES = 2


def aligned_length(t_mel: int, t_vec: int, t_pit: int) -> int:
    """Frames shared by all streams: ``min(T_pit, 2 T_vec - 2, T_mel)`` (100 frames/s).

    The original uses ``min(T_pit, 2 T_vec - 2)`` and assumes the mel is longer (it always is for files made by
    prepare/); including ``T_mel`` keeps the streams equally long even when it is not.
    """
    return max(0, min(t_pit, 2 * t_vec - UNIT_TAIL_FRAMES, t_mel))


class SVCDataset(Dataset):
    """Items of a filelist (``mel|vec|pit|spk`` per line), filtered and aligned like the original.

    Items whose ``T_pit - 1 < data.min_frames`` are dropped (the original's test, ``items_min``); the others are cut
    to at most ``data.max_frames`` frames: a random window in training (from (seed, epoch, index), see
    ``set_epoch``), the first frames otherwise.

    ``__getitem__`` returns ``{"mel": [n_mels, T] float32, "vec": [T, n_vecs] float32, "pit": [T] float32 Hz,
    "spk": [spk_dim] float32}`` with one ``T`` (100 frames/s).
    """

    def __init__(self, filelist: str | Path, cfg: DictConfig, train: bool):
        super().__init__()
        self.cfg = cfg
        self.train = train
        self.seed = int(cfg.train.seed)
        self.epoch = 0
        self.items: list[tuple[FeatureItem, int]] = []
        entries = read_filelist(filelist)
        short = 0
        for item in entries:
            try:
                t_pit = np.load(item.pit, mmap_mode="r", allow_pickle=False).shape[0]
            except (OSError, ValueError) as exc:
                raise FeatureError(f"{item.pit}: cannot read pitch ({exc})") from None
            usable = t_pit - 1  # the original's "useful length" test (grad_extend/data.py _filter)
            if usable < cfg.data.min_frames:
                short += 1
                continue
            self.items.append((item, min(usable, cfg.data.max_frames)))
        log.info("%s: %d items (%d shorter than %d frames dropped)", filelist, len(self.items), short,
                 cfg.data.min_frames)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the random windows of ``epoch`` (call before iterating; workers get a copy)."""
        self.epoch = int(epoch)

    def window_start(self, index: int, length: int, use: int, epoch: int | None = None) -> int:
        """First frame of the window of ``use`` frames out of ``length`` for item ``index`` in ``epoch`` (default:
        the one of ``set_epoch``)."""
        if length <= use:
            return 0
        if not self.train:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        # the original's random.randint(0, length - use - 1): the last aligned frame is never inside a window
        return int(rng.integers(0, length - use))

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """``index`` or ``(epoch, index)`` (``EpochTagged``: persistent loader workers never see ``set_epoch``)."""
        epoch = None
        if isinstance(index, tuple):
            epoch, index = index
        item, use = self.items[index]
        d, g = self.cfg.data, self.cfg.grad
        mel = read_mel(item.mel, d.mel_channels)
        # units are 50 frames/s, mel and F0 100 frames/s: repeat each unit frame twice (a, a, b, b, ...)
        vec = np.repeat(read_vec(item.vec, g.n_vecs), 2, axis=0)
        pit = read_pit(item.pit)
        spk = read_spk(item.spk, g.spk_dim)
        length = aligned_length(mel.shape[1], vec.shape[0] // 2, pit.shape[0])
        start = self.window_start(index, length, use, epoch)
        end = start + min(length, use)
        return {
            "mel": torch.from_numpy(np.ascontiguousarray(mel[:, start:end])),
            "vec": torch.from_numpy(np.ascontiguousarray(vec[start:end])),
            "pit": torch.from_numpy(pit[start:end].astype(np.float32)),
            "spk": torch.from_numpy(spk.copy()),
        }


def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Zero-pad items to ``fix_len_compatibility(max T)`` (a multiple of 4, for the U-Net).

    Returns ``mel [B, n_mels, T]``, ``lengths [B]`` int64 (valid mel frames), ``vec [B, T, n_vecs]``,
    ``pit [B, T]`` Hz (0 in the padding), ``spk [B, spk_dim]``; all float32 except ``lengths``.
    """
    n = len(batch)
    lengths = torch.tensor([b["mel"].shape[1] for b in batch], dtype=torch.long)
    t = fix_len_compatibility(int(lengths.max()))
    n_mels, n_vecs = batch[0]["mel"].shape[0], batch[0]["vec"].shape[1]
    mel = torch.zeros(n, n_mels, t)
    vec = torch.zeros(n, t, n_vecs)
    pit = torch.zeros(n, t)
    for i, b in enumerate(batch):
        k = b["mel"].shape[1]
        mel[i, :, :k] = b["mel"]
        vec[i, :k] = b["vec"]
        pit[i, :k] = b["pit"]
    spk = torch.stack([b["spk"] for b in batch])
    return {"mel": mel, "lengths": lengths, "vec": vec, "pit": pit, "spk": spk}


class EpochSampler(Sampler[int]):
    """Item order of one rank: a permutation from (seed, epoch), split across ranks, resumable at a batch.

    Like ``DistributedSampler`` (shuffle, then every ``world_size``-th index from ``rank``, the tail dropped so all
    ranks see the same number of items) plus ``skip_batches``: the first batches of the epoch already trained on
    before an interruption are left out, so a resumed epoch continues where the checkpoint stopped.
    """

    def __init__(self, n_items: int, seed: int, batch_size: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        self.n_items, self.seed, self.batch_size = n_items, int(seed), batch_size
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size
        self.epoch = 0
        self.skip_batches = 0

    @property
    def items_per_rank(self) -> int:
        return self.n_items // self.world_size

    @property
    def batches_per_epoch(self) -> int:
        """Full batches of one rank per epoch (the last partial batch is dropped, as in the original)."""
        return self.items_per_rank // self.batch_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = int(epoch)
        self.skip_batches = int(skip_batches)

    def order(self) -> list[int]:
        """All indices this rank reads in the current epoch, before skipping."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.n_items, generator=g).tolist()
        else:
            perm = list(range(self.n_items))
        perm = perm[: self.items_per_rank * self.world_size]
        return perm[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.order()[self.skip_batches * self.batch_size :])

    def __len__(self) -> int:
        return max(0, self.items_per_rank - self.skip_batches * self.batch_size)


class EpochTagged(Sampler[tuple[int, int]]):
    """``(epoch, index)`` pairs of an ``EpochSampler``: the epoch travels with each index, so a DataLoader's
    persistent workers (whose dataset copies never see ``set_epoch``) cut each epoch's windows."""

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def check_filelist(path: str | Path, cfg: DictConfig, allow_empty: bool = False) -> list[str]:
    """Problems of every item of the filelist ``path`` (empty list = usable), each one line naming its file.
    ``allow_empty``: a file without items is usable (a validation list of a set too small to hold any clip out).

    Checks: the filelist exists and has lines ``mel|vec|pit|spk``; every file exists and reads; dims
    (mel ``[n_mels, T]``, units ``[T, n_vecs]``, F0 ``[T]``, speaker ``[spk_dim]``); no NaN / infinity, no negative F0;
    ``2 T_vec`` and ``T_pit`` within a few frames of ``T_mel`` (common/features.py). Items too short for training
    are not problems (the dataset drops them).
    """
    try:
        items = read_filelist(path)
    except FeatureError as exc:
        return [str(exc)]
    if not items:
        return [] if allow_empty else [f"{path}: filelist has no items"]
    if cfg.grad.n_vecs != cfg.grad.spk_dim:
        # common.features checks units and speaker vectors against one dimension
        raise ValueError(f"config: grad.n_vecs ({cfg.grad.n_vecs}) != grad.spk_dim ({cfg.grad.spk_dim}) is unsupported")
    problems: list[str] = []
    for item in tqdm(items, desc=f"check {Path(path).name}", unit="item", leave=False):
        found, _ = check_item(item, n_mels=cfg.data.mel_channels, dim=cfg.grad.n_vecs)
        problems.extend(found)
    return problems

