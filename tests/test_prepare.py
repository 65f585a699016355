"""The numbered preprocessing commands that need no model: resampling, mel, index, check (as subprocesses)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common.features import FeatureItem, check_item, read_filelist

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def tone(seconds, sr, channels=1, f0=220.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * f0 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def raw_tree(tmp_path):
    """data_raw with one singer of good files in several formats and one of each kind of bad file."""
    raw = tmp_path / "data_raw" / "alto"
    raw.mkdir(parents=True)
    shutil.copy(CORPUS / "kal" / "scale.wav", raw / "good.wav")
    sf.write(raw / "stereo44k24.wav", tone(1.0, 44100, channels=2), 44100, subtype="PCM_24")
    sf.write(raw / "song.flac", tone(1.0, 22050), 22050)
    sf.write(raw / "song.ogg", tone(1.0, 48000), 48000, format="OGG", subtype="VORBIS")
    (raw / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 10)
    (raw / "empty.wav").write_bytes(b"")
    (raw / "notes.wav").write_text("these are lyrics, not audio\n")
    sf.write(raw / "silent.wav", np.zeros(16000), 16000)
    sf.write(raw / "short.wav", tone(0.2, 16000), 16000)
    nan = tone(1.0, 16000).astype(np.float32)
    nan[100] = np.nan
    sf.write(raw / "nan.wav", nan, 16000, subtype="FLOAT")
    return tmp_path / "data_raw"


BAD = {"corrupt.wav": "not readable", "empty.wav": "empty", "notes.wav": "not readable", "silent.wav": "silent",
       "short.wav": "too short", "nan.wav": "NaN", "song.ogg": "same output name as song.flac"}
GOOD = ["good", "stereo44k24", "song"]


def test_preprocess_a_bad_inputs_are_reported_and_the_rest_processed(raw_tree, tmp_path):
    out = tmp_path / "waves-16k"
    res = run("prepare/preprocess_a.py", "-w", raw_tree, "-o", out, "-s", 16000, "-t", 1)
    assert res.returncode == 1, res.stderr
    for name, reason in BAD.items():
        line = next((ln for ln in res.stderr.splitlines() if "FAILED" in ln and name in ln), "")
        assert reason in line, f"{name}: {res.stderr}"
        assert not (out / "alto" / name).exists()
    written = sorted(p.name for p in (out / "alto").iterdir())
    assert written == ["good.wav", "song.wav", "stereo44k24.wav"], written
    for p in (out / "alto").iterdir():
        x, sr = sf.read(p, dtype="int16")
        info = sf.info(p)
        assert sr == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(np.abs(x).max() / 32767 - 0.6) < 0.01  # peak normalised as the original
    assert not list(out.rglob("*.tmp*")), "no half-written outputs"
    # resumable: a second run skips what is done and reports the same failures
    res2 = run("prepare/preprocess_a.py", "-w", raw_tree, "-o", out, "-s", 16000, "-t", 2)
    assert "3 already done" in res2.stderr and "0 processed" in res2.stderr and "7 failed" in res2.stderr


def test_mel_index_and_check(tmp_path):
    """waves-32k -> mel; features written by hand for the other steps; index and check find what is wrong."""
    data = tmp_path / "data_gvc"
    w32 = data / "waves-32k"
    for singer in ("kal", "slt"):
        (w32 / singer).mkdir(parents=True)
        for song in ("scale", "march"):
            x, sr = sf.read(CORPUS / singer / f"{song}.wav")
            sf.write(w32 / singer / f"{song}.wav", x, sr)  # rate is irrelevant here: the mel step resamples
    res = run("prepare/preprocess_spec.py", "-w", w32, "-s", data / "mel", "-t", 2)
    assert res.returncode == 0, res.stderr
    mel = torch.load(data / "mel" / "kal" / "scale.mel.pt", weights_only=True)
    n32 = int(round(sf.info(CORPUS / "kal" / "scale.wav").duration * 32000))
    assert mel.dtype == torch.float32 and mel.shape[0] == 100 and abs(mel.shape[1] - n32 // 320) <= 1
    # consistent hand-made features for every item but one, whose pitch is missing
    for mel_path in sorted((data / "mel").rglob("*.mel.pt")):
        singer, name = mel_path.parent.name, mel_path.name.removesuffix(".mel.pt")
        t = torch.load(mel_path, weights_only=True).shape[1]
        for sub in ("hubert", "pitch", "speaker"):
            (data / sub / singer).mkdir(parents=True, exist_ok=True)
        np.save(data / "hubert" / singer / f"{name}.vec.npy", np.zeros((t // 2, 256), np.float32))
        np.save(data / "speaker" / singer / f"{name}.spk.npy", np.full(256, 0.1, np.float32))
        if (singer, name) != ("slt", "march"):
            np.save(data / "pitch" / singer / f"{name}.pit.npy", np.full(t + 3, 200.0))
    res = run("prepare/preprocess_train.py", "--data", data, "--out", tmp_path / "files", "--valid", 1,
              "--valid_share", 0.5)
    assert res.returncode == 0, res.stderr
    assert "march.pit.npy" in res.stderr  # the incomplete item is named
    train = read_filelist(tmp_path / "files" / "train.txt")
    valid = read_filelist(tmp_path / "files" / "valid.txt")
    assert len(train) == 2 and len(valid) == 1
    res = run("prepare/preprocess_zzz.py", "--data", data, "--files", tmp_path / "files")
    assert res.returncode == 1 and "slt/march.wav: not in any filelist" in res.stderr
    assert "kal:" in res.stdout
    # an inconsistent item is caught by the check
    item: FeatureItem = train[0]
    np.save(item.vec, np.zeros((5, 256), np.float32))
    problems, _ = check_item(item)
    assert any("do not match" in p for p in problems)
    np.save(item.pit, np.full(np.load(item.pit).shape, np.nan))
    problems, _ = check_item(item)
    assert any("NaN" in p for p in problems)


def test_dataset_check_ratios_and_warnings():
    from prepare.preprocess_zzz import audio_stats, warnings_for

    sr = 16000
    x = tone(1.0, sr, amp=0.6).astype(np.float32)
    silence, clipping = audio_stats(np.r_[x, np.zeros(sr, np.float32)], sr)
    assert abs(silence - 0.5) < 0.02 and clipping < 1e-3
    clipped = np.clip(tone(1.0, sr, amp=1.2), -0.6, 0.6).astype(np.float32)
    assert audio_stats(clipped, sr)[1] > 0.2
    summary = {"alto": {"minutes": 2.0, "f0_p5_hz": 200.0, "f0_p95_hz": 400.0, "clipping_ratio": 0.01,
                        "silence_ratio": 0.7}}
    warns = warnings_for(summary, songs_range=(150.0, 800.0))
    text = "\n".join(warns)
    assert "only 2.0 min" in text and "clipped" in text and "silence" in text
    assert "12.0 semitones above" in text and "--shift -12" in text and "below" in text
    ok = {"alto": {"minutes": 30.0, "f0_p5_hz": 200.0, "f0_p95_hz": 400.0, "clipping_ratio": 0.0,
                   "silence_ratio": 0.1}}
    assert warnings_for(ok, songs_range=(210.0, 390.0)) == []


def test_song_range_reads_one_file_and_names_unreadable_songs(tmp_path, capsys):
    """--songs may name one song; songs that cannot be read are named, not silently dropped."""
    from prepare.preprocess_zzz import song_f0_range

    sf.write(tmp_path / "high.wav", tone(1.0, 16000, f0=440.0), 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    low, high = song_f0_range(tmp_path / "high.wav", "praat")
    assert abs(low - 440) < 5 and abs(high - 440) < 5
    assert song_f0_range(tmp_path, "praat") is not None
    assert "broken.wav" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["prepare/preprocess_a.py", "-w", "{missing}", "-o", "{out}", "-s", "16000"],
    ["prepare/preprocess_f0.py", "-w", "{missing}", "-p", "{out}"],
    ["prepare/preprocess_spec.py", "-w", "{missing}", "-s", "{out}"],
    ["prepare/preprocess_speaker.py", "{missing}", "{out}", "--backend", "resemblyzer"],
    ["prepare/preprocess_speaker_ave.py", "{missing}", "{out}"],
], ids=lambda a: Path(a[0]).stem)
def test_missing_input_folder_is_one_line_and_exit_2(argv, tmp_path):
    missing, out = tmp_path / "no_such_folder", tmp_path / "out"
    res = run(*[a.format(missing=missing, out=out) for a in argv])
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {missing}: input folder not found"
    assert not out.exists()


def test_index_leaves_out_unusable_names(tmp_path):
    """Step 8 names and leaves out a wav outside any singer folder and a name containing the index's '|'."""
    from common.audio import AUDIO_EXTENSIONS, list_audio

    data = tmp_path / "data_gvc"
    for singer, name in (("kal", "ok"), ("kal", "a|b"), (None, "top")):
        folder = data / "waves-32k" / singer if singer else data / "waves-32k"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{name}.wav", tone(0.5, 32000), 32000)
        if singer:
            for sub, suffix in (("mel", ".mel.pt"), ("hubert", ".vec.npy"), ("pitch", ".pit.npy"),
                                ("speaker", ".spk.npy")):
                (data / sub / singer).mkdir(parents=True, exist_ok=True)
                (data / sub / singer / f"{name}{suffix}").write_bytes(b"x")
    res = run("prepare/preprocess_train.py", "--data", data, "--out", tmp_path / "files", "--valid", 0)
    assert res.returncode == 0, res.stderr
    assert "top.wav: not in a singer folder" in res.stderr and "a|b.wav: '|' separates" in res.stderr
    assert (tmp_path / "files" / "train.txt").read_text().count("\n") == 1
    # formats soundfile reads beyond wav/flac/ogg are found by the file walk
    sf.write(tmp_path / "x.au", tone(0.2, 16000), 16000)
    sf.write(tmp_path / "x.caf", tone(0.2, 16000), 16000)
    assert {".au", ".caf", ".w64"} <= set(AUDIO_EXTENSIONS)
    assert [p.name for p in list_audio(tmp_path) if p.suffix in (".au", ".caf")] == ["x.au", "x.caf"]


def test_feature_steps_refuse_bad_checkpoint_config_and_tiny_clips(tmp_path):
    """preprocess_hubert with an unusable checkpoint and preprocess_spec with a missing -c stop with one line
    (exit 2) before any file; a clip too short to give a frame is a per-file 'too short' failure."""
    waves = tmp_path / "waves-16k" / "alto"
    waves.mkdir(parents=True)
    sf.write(waves / "ok.wav", tone(0.5, 16000), 16000)
    sf.write(waves / "tiny.wav", tone(0.01, 16000), 16000)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    res = run("prepare/preprocess_hubert.py", "-w", tmp_path / "waves-16k", "-v", tmp_path / "hubert",
              "--model", junk)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "junk.pt: cannot load checkpoint: corrupt or not a PyTorch file" in res.stderr
    res = run("prepare/preprocess_spec.py", "-w", tmp_path / "waves-16k", "-s", tmp_path / "mel", "-c",
              tmp_path / "nope.yaml")
    assert res.returncode == 2 and "nope.yaml: config file not found" in res.stderr and "Traceback" not in res.stderr
    res = run("prepare/preprocess_spec.py", "-w", tmp_path / "waves-16k", "-s", tmp_path / "mel", "-t", 1)
    assert res.returncode == 1 and "tiny.wav: too short" in res.stderr
    assert [p.name for p in (tmp_path / "mel" / "alto").iterdir()] == ["ok.mel.pt"]


def test_resample_scales_quiet_files_to_peak_06_and_matches_librosa_length(tmp_path):
    """preprocess_a as the original: a -50 dBFS file is stored at peak 0.6 (int16 19660) like any other, and the
    resampled length is librosa.load's ceil(N x ratio)."""
    import librosa

    from common.audio import load_audio
    from prepare import preprocess_a

    raw, out = tmp_path / "raw" / "spk", tmp_path / "out"
    raw.mkdir(parents=True)
    x = (0.00316 * np.sin(2 * np.pi * 220 * np.arange(22052) / 22050)).astype(np.float32)
    sf.write(raw / "quiet.wav", x, 22050, subtype="FLOAT")
    assert preprocess_a.main(["-w", str(tmp_path / "raw"), "-o", str(out), "-s", "16000", "-t", "1"]) == 0
    stored, sr = sf.read(out / "spk" / "quiet.wav", dtype="int16")
    ref, _ = librosa.load(raw / "quiet.wav", sr=16000)
    # 22052 x 16000 / 22050 = 16001.45: soxr alone gives 16001 samples, librosa.load 16002
    assert sr == 16000 and stored.shape[0] == ref.shape[0] == 16002
    assert int(np.abs(stored).max()) == 19660
    np.testing.assert_allclose(load_audio(raw / "quiet.wav", 16000), ref, atol=1e-6)
