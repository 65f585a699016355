"""gvc_studio.py's page logic without a browser: sessions, upload checks, missing pretrained files, Auto key,
conversion with the edited pitch, two conversions at once, the pitch CSV round trip and the dataset view.
Recipe-made official-format checkpoints, WORLD vocoder (tests/test_studio_browser.py drives the real page)."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from svc_features import random_singer

from golden import cached_official_checkpoint
from gvc_studio import Sessions, Studio, StudioError, StudioOptions, Work
from pitch.csv_io import load_csv_pitch, save_csv_pitch
from pitch.f0 import round_f0

CORPUS_SONG = Path(__file__).parent / "fixtures" / "corpus" / "kal" / "scale.wav"
SR = 32000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studio")
    x, sr = sf.read(CORPUS_SONG, dtype="float32")
    song = tmp / "song.wav"
    sf.write(song, x[int(0.5 * sr): int(1.5 * sr)], sr)
    singers = tmp / "singer"
    singers.mkdir()
    rng = np.random.default_rng(0)
    for name in ("alto", "nostats"):
        v = rng.standard_normal(256).astype(np.float32)
        np.save(singers / f"{name}.spk.npy", v / np.linalg.norm(v))
    studio = Studio(StudioOptions(model=str(cached_official_checkpoint("gvc_v3")),
                                  hubert_model=str(cached_official_checkpoint("hubert_soft", prefix="module.")),
                                  vocoder="world", singers=str(singers), workdir=str(tmp / "work")))
    assert studio.converter is not None and studio.missing == [], studio.status_markdown()
    return {"studio": studio, "song": song, "singers": singers, "tmp": tmp}


def loaded(setup, session: str) -> Work:
    work, msg = setup["studio"].load_song(Work(session=session), str(setup["song"]))
    assert "1.00 s" in msg and work.f0 is not None
    assert work.song.startswith(str(setup["tmp"] / "work" / "sessions" / session))
    return work


def test_missing_pretrained_files_are_listed_with_where_to_get_them(tmp_path):
    studio = Studio(StudioOptions(model=str(tmp_path / "gvc.pth"), hubert_model=str(tmp_path / "hubert.pt"),
                                  vocoder_model=str(tmp_path / "bigvgan.pth"), workdir=str(tmp_path / "work")))
    assert studio.converter is None and len(studio.missing) == 3
    page = studio.status_markdown()
    for expected in ("gvc.pth", "hubert.pt", "bigvgan.pth", "https://github.com/PlayVoice/Grad-SVC/releases",
                     "https://github.com/bshall/hubert/releases", "--vocoder world", "griffinlim"):
        assert expected in page
    with pytest.raises(StudioError, match="the model is not loaded: missing pretrained files .*gvc.pth"):
        studio.require_converter()


def test_uploads_over_the_limit_or_unreadable_give_one_line(tmp_path):
    studio = Studio(StudioOptions(model=str(tmp_path / "none.pth"), max_upload_mb=0.01,
                                  workdir=str(tmp_path / "work")))
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(16000, np.float32), 16000)  # 32 kB
    with pytest.raises(StudioError, match=r"big.wav: 0.0\d? MB is over the upload limit of 0.01 MB"):
        studio.load_song(Work(session="s"), str(big))
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(StudioError, match="^bad.wav: not readable as audio"):
        studio.load_song(Work(session="s"), str(bad))
    with pytest.raises(StudioError, match="must be a .spk.npy"):
        studio.singer_path(None, str(bad))


def test_binds_to_this_machine_by_default():
    from gvc_studio import build_parser

    args = build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.max_upload_mb == 50 and args.singers == "data_gvc/singer"


def test_sessions_have_their_own_folders_and_idle_ones_are_removed(tmp_path):
    import os

    (tmp_path / "mine").mkdir()  # a folder of the user's in --workdir: never touched
    sessions = Sessions(tmp_path, ttl_s=60)
    a, b = sessions.folder("aaa"), sessions.folder("../bbb")
    assert a.parent == b.parent == tmp_path / "sessions" and a != b and b.name == "bbb"  # no escape from the root
    (a / "x.wav").write_bytes(b"x")
    assert sessions.sweep(now=time.time() + 30) == []
    old = time.time() - 120
    os.utime(a, (old, old))
    (tmp_path / "sessions" / "other").mkdir()
    os.utime(tmp_path / "sessions" / "other", (old, old))
    assert sessions.sweep() == [a] and not a.exists() and b.exists()
    sessions.drop("bbb")
    sessions.drop("")
    assert not b.exists() and (tmp_path / "mine").is_dir() and (tmp_path / "sessions" / "other").is_dir()


def test_auto_key_from_the_singers_statistics(setup):
    from pitch.key import f0_stats, write_singer_stats

    studio = setup["studio"]
    work = loaded(setup, "auto")
    alto = studio.singer_path("alto", None)
    write_singer_stats(alto, f0_stats(work.f0 * 2))  # a singer an octave above the song
    shift, reason = studio.auto_shift(work, alto)
    assert shift == 12 and reason.startswith("shift +12")
    with pytest.raises(StudioError, match="nostats.f0.json: no F0 statistics .*preprocess_speaker_ave.py"):
        studio.auto_shift(work, studio.singer_path("nostats", None))
    with pytest.raises(StudioError, match="singer not found"):
        studio.singer_path("nobody", None)


def test_convert_then_reconvert_with_an_edited_note(setup):
    studio = setup["studio"]
    work = loaded(setup, "edit")
    singer = studio.singer_path("alto", None)
    work, first = studio.convert(work, singer, steps=1, seed=3)
    wav, sr = sf.read(first.wav, dtype="float32")
    assert sr == SR and abs(len(wav) - SR) <= 320 * 3 and np.isfinite(wav).all() and np.abs(wav).max() > 0
    for path in (first.pitch_wav, first.mel_png, first.f0_png):
        assert Path(path).is_file() and Path(path).stat().st_size > 0
    rows = studio.pitch_view(work).rows
    rows[0][4] = "C5"
    work, view = studio.edit_table(work, rows)
    assert view.message == "1 note(s) changed." and view.rows[0][4] == "C5"
    assert np.array_equal(load_csv_pitch(view.csv), round_f0(work.edited))  # the CSV to download is the edit
    work, second = studio.convert(work, singer, steps=1, seed=3)
    assert "with the edited pitch" in second.message and second.wav != first.wav
    edited_wav, _ = sf.read(second.wav, dtype="float32")
    start, end = int(rows[0][1] * SR), int(rows[0][2] * SR)
    assert not np.array_equal(edited_wav[start:end], wav[start:end])  # the edited note sounds different
    work, view = studio.reset_pitch(work)
    assert work.edited is None and view.rows[0][4] != "C5"


def test_a_second_singer_file_mixes_the_voice(setup, tmp_path):
    """An uploaded second .spk.npy mixed half and half: the message names both voices, the result is the CLI's
    --spk a b --spk_weights 0.5 0.5 (the mean vector converted alone gives the same samples)."""
    studio = setup["studio"]
    work = loaded(setup, "mix")
    singer = studio.singer_path("alto", None)
    other = random_singer(tmp_path / "tenor.spk.npy", seed=5)
    work, mixed = studio.convert(work, singer, studio.singer_path(None, str(other)), 0.5, steps=1, seed=3)
    assert "voice alto 50 % + tenor 50 %" in mixed.message
    mean = tmp_path / "mean.spk.npy"
    np.save(mean, (0.5 * np.load(singer).astype(np.float64) + 0.5 * np.load(other).astype(np.float64))
            .astype(np.float32))
    work, alone = studio.convert(work, str(mean), steps=1, seed=3)
    assert "voice mean" in alone.message
    assert np.array_equal(sf.read(mixed.wav, dtype="float32")[0], sf.read(alone.wav, dtype="float32")[0])


def test_pitch_csv_upload_replaces_the_f0(setup, tmp_path):
    studio = setup["studio"]
    work = loaded(setup, "csv")
    f0 = work.f0.copy()
    f0[f0 > 0] *= 1.5
    save_csv_pitch(tmp_path / "edited.csv", f0)
    work, view = studio.upload_pitch(work, str(tmp_path / "edited.csv"))
    assert np.array_equal(work.edited, round_f0(f0)) and "frames loaded" in view.message
    (tmp_path / "bad.csv").write_text("0m 0s   0,abc\n")
    with pytest.raises(ValueError, match="bad.csv:1: bad pitch row"):
        studio.upload_pitch(work, str(tmp_path / "bad.csv"))
    work, view = studio.edit_octave(work, 0.0, 0.0, "down")  # 0 = to the end: the whole song an octave down
    assert np.allclose(work.edited, round_f0(f0) / 2)
    work, view = studio.edit_snap(work, 0.0, 0.5, 1.0, False)
    from pitch.edit import hz_to_midi

    voiced = work.edited[:50][work.edited[:50] > 0]
    assert np.allclose(hz_to_midi(voiced), np.round(hz_to_midi(voiced)))


def test_two_conversions_at_once_each_get_their_own_result(setup):
    """Two sessions converting at the same time (threads, as Gradio's workers) get exactly what each gets alone."""
    studio = setup["studio"]
    works = {"left": loaded(setup, "left"), "right": loaded(setup, "right")}
    singer = studio.singer_path("alto", None)
    shifts = {"left": 0.0, "right": 7.0}
    results, errors = {}, []

    def run(name):
        try:
            results[name] = studio.convert(works[name], singer, shift=shifts[name], steps=1, seed=5)[1]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in works]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name, res in results.items():
        assert f"/{name}/" in res.wav and res.shift == shifts[name]
        alone = studio.convert(loaded(setup, f"{name}-alone"), singer, shift=shifts[name], steps=1, seed=5)[1]
        assert np.array_equal(sf.read(res.wav)[0], sf.read(alone.wav)[0])
    assert not np.array_equal(sf.read(results["left"].wav)[0], sf.read(results["right"].wav)[0])


def test_dataset_view_reports_each_singer_and_its_histogram(setup, tmp_path):
    data = tmp_path / "data_gvc"
    for singer, hz in (("alto", 220.0), ("bass", 110.0)):
        for name in ("a", "b"):
            for sub in ("mel", "hubert", "pitch", "speaker", "waves-32k"):
                (data / sub / singer).mkdir(parents=True, exist_ok=True)
            torch.save(torch.zeros(100, 200), data / "mel" / singer / f"{name}.mel.pt")
            np.save(data / "hubert" / singer / f"{name}.vec.npy", np.zeros((100, 256), np.float32))
            np.save(data / "pitch" / singer / f"{name}.pit.npy", np.r_[np.zeros(20), np.full(160, hz), np.zeros(20)])
            np.save(data / "speaker" / singer / f"{name}.spk.npy", np.full(256, 0.1, np.float32))
            sf.write(data / "waves-32k" / singer / f"{name}.wav", 0.1 * np.ones(64000, np.float32), SR)
    rows, plots, text = setup["studio"].dataset_report(Work(session="data"), str(data))
    assert [r[0] for r in rows] == ["alto", "bass"]
    alto = rows[0]
    assert alto[1] == 2 and alto[3] == 0.8 and alto[4] == alto[5] == 220.0  # clips, voiced ratio, F0 p5 / p95
    assert [Path(p).name for p in plots] == ["alto.f0.png", "bass.f0.png"]
    assert "4 clips of 2 singers" in text and "feature set OK" in text and "WARNING alto: only" in text
    with pytest.raises(StudioError, match="not a data_gvc folder"):
        setup["studio"].dataset_report(Work(session="data"), str(tmp_path))
