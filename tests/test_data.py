"""grad/data.py: alignment, filtering, windows, collate padding, sampler order, filelist checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from svc_features import write_feature_set, write_item

from common.config import REPO_ROOT, load_config
from common.features import read_filelist
from grad.data import EpochSampler, SVCDataset, aligned_length, check_filelist, collate


@pytest.fixture
def cfg():
    return load_config(REPO_ROOT / "configs" / "tiny.yaml")


@pytest.fixture
def features(tmp_path):
    return write_feature_set(tmp_path / "feat")


def test_aligned_length_follows_the_original():
    # min(T_pit, 2 T_vec - 2) when the mel is longer (always for prepare/ output), else the mel bounds it
    assert aligned_length(t_mel=100, t_vec=50, t_pit=103) == 98
    assert aligned_length(t_mel=100, t_vec=60, t_pit=97) == 97
    assert aligned_length(t_mel=90, t_vec=50, t_pit=103) == 90


def test_item_alignment_and_dtypes(cfg, features):
    train, _ = features
    ds = SVCDataset(train, cfg, train=False)
    for i, (entry, _) in enumerate(ds.items):
        item = ds[i]
        t_mel = torch.load(entry.mel, weights_only=True).shape[1]
        vec = np.load(entry.vec)
        pit = np.load(entry.pit)
        t = min(pit.shape[0], 2 * vec.shape[0] - 2, t_mel, cfg.data.max_frames)
        assert item["mel"].shape == (100, t)
        assert item["vec"].shape == (t, 256) and item["pit"].shape == (t,) and item["spk"].shape == (256,)
        assert all(v.dtype == torch.float32 for v in item.values())
        # units repeated x2 in place: frames 2k and 2k+1 are unit k
        np.testing.assert_array_equal(item["vec"][0::2].numpy(), vec[: (t + 1) // 2])
        np.testing.assert_array_equal(item["vec"][1::2].numpy(), vec[: t // 2])
        np.testing.assert_allclose(item["pit"].numpy(), pit[:t].astype(np.float32))


def test_short_items_dropped_and_long_items_windowed(cfg, tmp_path):
    rng = np.random.default_rng(1)
    spk = np.ones(256) * 0.05
    lines = [write_item(tmp_path, "short", 50, spk, rng), write_item(tmp_path, "long", 400, spk, rng)]
    filelist = tmp_path / "list.txt"
    filelist.write_text("\n".join(lines) + "\n")
    cfg.data.min_frames, cfg.data.max_frames = 60, 120
    ds = SVCDataset(filelist, cfg, train=True)
    assert len(ds) == 1  # T_pit - 1 = 52 < 60 dropped
    full = SVCDataset(filelist, cfg, train=False)[0]["mel"]
    assert full.shape[1] == 120  # not training: the first max_frames frames
    whole = torch.load(tmp_path / "long.mel.pt", weights_only=True)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        mel = ds[0]["mel"]
        assert mel.shape[1] == 120
        start = int(np.argmin([float((whole[:, s : s + 120] - mel).abs().sum()) for s in range(400 - 120 + 1)]))
        np.testing.assert_array_equal(mel.numpy(), whole[:, start : start + 120].numpy())
        starts.add(start)
        ds.set_epoch(epoch)
        assert torch.equal(ds[0]["mel"], mel)  # the window depends only on (seed, epoch, index)
    assert len(starts) > 1


def test_training_crop_start_is_drawn_from_0_to_L_minus_use_minus_1(cfg, tmp_path):
    """The original's random.randint(0, L - use - 1): the window never reaches the last aligned frame
    (docs/conventions.md#training-crop). An item of L = 98 aligned frames cut to use = 96 starts at 0 or 1, never 2."""
    rng = np.random.default_rng(2)
    line = write_item(tmp_path, "item", 100, np.ones(256) * 0.05, rng)
    (tmp_path / "list.txt").write_text(line + "\n")
    length = aligned_length(t_mel=100, t_vec=50, t_pit=103)
    cfg.data.min_frames, cfg.data.max_frames = 60, length - 2
    ds = SVCDataset(tmp_path / "list.txt", cfg, train=True)
    whole = torch.load(tmp_path / "item.mel.pt", weights_only=True)
    use = length - 2
    starts = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        mel = ds[0]["mel"]
        start = next(s for s in range(length - use + 1) if torch.equal(mel, whole[:, s : s + use]))
        starts.add(start)
    assert starts == {0, 1}
    # the draw itself over other lengths: L = use + 1 always starts at 0; L = use + 4 covers 0..3
    for extra in (1, 4):
        drawn = {ds.window_start(0, 50 + extra, 50, epoch) for epoch in range(200)}
        assert drawn == set(range(extra)), (extra, drawn)


def test_collate_pads_to_multiple_of_four(cfg, features):
    train, _ = features
    ds = SVCDataset(train, cfg, train=True)
    items = [ds[i] for i in range(3)]
    batch = collate(items)
    lengths = [it["mel"].shape[1] for it in items]
    t = batch["mel"].shape[2]
    assert t % 4 == 0 and max(lengths) <= t < max(lengths) + 4
    assert batch["lengths"].tolist() == lengths and batch["lengths"].dtype == torch.long
    assert batch["vec"].shape == (3, t, 256) and batch["pit"].shape == (3, t) and batch["spk"].shape == (3, 256)
    for i, n in enumerate(lengths):
        assert torch.equal(batch["mel"][i, :, :n], items[i]["mel"])
        assert torch.equal(batch["vec"][i, :n], items[i]["vec"])
        assert batch["mel"][i, :, n:].abs().sum() == 0 and batch["vec"][i, n:].abs().sum() == 0
        assert batch["pit"][i, n:].abs().sum() == 0


def test_sampler_order_reproducible_split_and_resumable():
    s = EpochSampler(10, seed=5, batch_size=2)
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(3)
    assert list(s) == a and sorted(a) == list(range(10))
    s.set_epoch(4)
    assert list(s) != a
    s.set_epoch(3, skip_batches=2)
    assert list(s) == a[4:] and len(s) == 6
    ranks = [EpochSampler(11, seed=5, batch_size=2, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(3)
    parts = [list(r) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 5 and not set(parts[0]) & set(parts[1])
    assert ranks[0].batches_per_epoch == 2


def test_check_filelist_clean(cfg, features):
    train, valid = features
    assert check_filelist(train, cfg) == []
    assert check_filelist(valid, cfg) == []


def test_check_filelist_finds_problems(cfg, features, tmp_path):
    train, _ = features
    items = read_filelist(train)
    items[0].vec.unlink()  # missing file
    rng = np.random.default_rng(2)
    spk = np.full(256, 0.05)
    lines = [it.line() for it in items]
    lines.append(write_item(tmp_path, "mismatch", 120, spk, rng, t_vec=40))  # 80 unit frames for 120 mel frames
    lines.append(write_item(tmp_path, "nan", 100, spk, rng))
    pit = np.load(tmp_path / "nan.pit.npy")
    pit[5] = np.nan
    np.save(tmp_path / "nan.pit.npy", pit)
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    problems = check_filelist(bad, cfg)
    assert len(problems) == 3, problems
    assert str(items[0].vec) in problems[0] and "missing" in problems[0]
    assert "mismatch.vec.npy" in problems[1] and "do not match" in problems[1]
    assert "nan.pit.npy" in problems[2] and "NaN" in problems[2]
    assert "not found" in check_filelist(tmp_path / "absent.txt", cfg)[0]


def test_persistent_workers_cut_each_epochs_windows(cfg, tmp_path):
    """EpochTagged carries the epoch to the loader's persistent workers (their dataset copies never see set_epoch):
    the windows they cut in epochs 3 and 4 equal the in-process ones of set_epoch(3), set_epoch(4)."""
    from torch.utils.data import DataLoader

    from grad.data import EpochTagged

    rng = np.random.default_rng(2)
    lines = [write_item(tmp_path, f"long{i}", 400, np.ones(256) * 0.05, rng) for i in range(4)]
    filelist = tmp_path / "list.txt"
    filelist.write_text("\n".join(lines) + "\n")
    cfg.data.min_frames, cfg.data.max_frames = 60, 120
    ds = SVCDataset(filelist, cfg, train=True)
    sampler = EpochSampler(len(ds), seed=5, batch_size=2)
    loader = DataLoader(ds, batch_size=2, sampler=EpochTagged(sampler), collate_fn=collate, num_workers=2,
                        persistent_workers=True, drop_last=True)
    for epoch in (3, 4):
        sampler.set_epoch(epoch)
        got = torch.cat([b["mel"] for b in loader])
        ds.set_epoch(epoch)
        expected = torch.stack([ds[i]["mel"] for i in sampler.order()])
        assert torch.equal(got, expected)
