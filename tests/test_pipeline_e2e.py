"""The numbered preprocessing commands of the README, run as a user runs them (subprocesses, relative paths, from
the folder holding data_raw/), on the committed festival corpus; then the produced tree is checked."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from golden import cached_official_checkpoint

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "fixtures" / "corpus"
SINGERS = {"kal": ["scale", "march"], "slt": ["scale", "waltz"]}


def step(cwd: Path, *args) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{args}: {res.stderr[-2000:]}"
    return res


def test_numbered_pipeline_builds_the_whole_tree(tmp_path):
    for singer, songs in SINGERS.items():
        (tmp_path / "data_raw" / singer).mkdir(parents=True)
        for song in songs:
            shutil.copy(CORPUS / singer / f"{song}.wav", tmp_path / "data_raw" / singer / f"{song}.wav")
    hubert = cached_official_checkpoint("hubert_soft", prefix="module.")
    p = REPO / "prepare"
    step(tmp_path, p / "preprocess_a.py", "-w", "./data_raw", "-o", "./data_gvc/waves-16k", "-s", "16000")
    step(tmp_path, p / "preprocess_a.py", "-w", "./data_raw", "-o", "./data_gvc/waves-32k", "-s", "32000")
    step(tmp_path, p / "preprocess_f0.py", "-w", "data_gvc/waves-16k/", "-p", "data_gvc/pitch")
    step(tmp_path, p / "preprocess_spec.py", "-w", "data_gvc/waves-32k/", "-s", "data_gvc/mel")
    step(tmp_path, p / "preprocess_hubert.py", "-w", "data_gvc/waves-16k/", "-v", "data_gvc/hubert", "--model", hubert)
    step(tmp_path, p / "preprocess_speaker.py", "data_gvc/waves-16k/", "data_gvc/speaker", "--backend", "resemblyzer")
    step(tmp_path, p / "preprocess_speaker_ave.py", "data_gvc/speaker/", "data_gvc/singer")
    step(tmp_path, p / "preprocess_train.py", "--valid", "1", "--valid_share", "0.5")
    check = step(tmp_path, p / "preprocess_zzz.py")
    assert "feature set OK" in check.stdout and "kal:" in check.stdout

    d = tmp_path / "data_gvc"
    for singer, songs in SINGERS.items():
        for song in songs:
            mel = torch.load(d / "mel" / singer / f"{song}.mel.pt", weights_only=True)
            vec = np.load(d / "hubert" / singer / f"{song}.vec.npy")
            pit = np.load(d / "pitch" / singer / f"{song}.pit.npy")
            spk = np.load(d / "speaker" / singer / f"{song}.spk.npy")
            assert mel.dtype == torch.float32 and mel.shape[0] == 100
            assert vec.dtype == np.float32 and vec.shape[1] == 256 and abs(2 * vec.shape[0] - mel.shape[1]) <= 2
            assert pit.dtype == np.float64 and 0 <= pit.shape[0] - mel.shape[1] <= 4 and (pit > 0).mean() > 0.5
            assert spk.shape == (256,) and spk.dtype == np.float32 and np.isfinite(spk).all()
        mean = np.load(d / "singer" / f"{singer}.spk.npy")
        assert mean.shape == (256,) and np.isfinite(mean).all()
        stats = json.loads((d / "singer" / f"{singer}.f0.json").read_text())  # for --shift auto
        assert 50 < stats["p5_hz"] <= stats["p50_hz"] <= stats["p95_hz"] < 1100 and stats["pitch_files"] == len(songs)
    assert (d / "speaker" / "backend.json").is_file() and (d / "singer" / "backend.json").is_file()
    train = (tmp_path / "files" / "train.txt").read_text().splitlines()
    valid = (tmp_path / "files" / "valid.txt").read_text().splitlines()
    assert len(train) == 3 and len(valid) == 1 and all(line.startswith("data_gvc/mel/") for line in train + valid)
    # rerunning a step skips the complete outputs
    again = step(tmp_path, p / "preprocess_f0.py", "-w", "data_gvc/waves-16k/", "-p", "data_gvc/pitch")
    assert "4 already done" in again.stderr


def test_demo_passes_the_official_files_by_absolute_path():
    """gvc_demo runs its commands inside the work folder: an official speaker encoder or vocoder it found must be
    passed by absolute path (the commands' relative defaults point nowhere there); fallbacks need no file."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import gvc_demo

    speaker, vocoder = gvc_demo.file_args({"speaker": ("lstm", ""), "vocoder": ("bigvgan", "")})
    assert speaker[0] == "--checkpoint" and Path(speaker[1]).is_absolute()
    assert speaker[1].endswith("speaker_pretrain/best_model.pth.tar")
    assert vocoder[0] == "--vocoder_model" and Path(vocoder[1]).is_absolute()
    assert vocoder[1].endswith("bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth")
    assert gvc_demo.file_args({"speaker": ("resemblyzer", ""), "vocoder": ("griffinlim", "")}) == ([], [])
