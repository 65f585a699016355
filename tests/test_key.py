"""Automatic key (pitch/key.py): singers' F0 statistics written by step 6, the shift rule on real singing from the
committed corpus, the one-line error of a singer without statistics, and gvc_inference.py --shift auto end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from svc_features import cut_song, random_singer

from common.audio import load_audio
from golden import cached_official_checkpoint
from gvc_inference import main as inference_main
from pitch.f0 import compute_f0
from pitch.key import (
    KeyStatsError,
    auto_shift,
    f0_stats,
    load_singer_stats,
    mix_stats,
    stats_path,
    suggest_shift,
    write_singer_stats,
)
from prepare import preprocess_speaker_ave

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "fixtures" / "corpus"
SONGS = ("scale", "lullaby", "march", "waltz")


@pytest.fixture(scope="module")
def corpus_f0():
    """{(singer, song): F0 [T] at 100 Hz} of the committed corpus (praat, as step 2 by default)."""
    return {(singer, song): compute_f0(load_audio(CORPUS / singer / f"{song}.wav", 16000), 16000)
            for singer in ("kal", "ked", "slt") for song in SONGS}


def singer_f0(corpus_f0, singer):
    return np.concatenate([corpus_f0[singer, song] for song in SONGS])


# ---------------------------------------------------------------- the rule
def test_a_source_an_octave_below_the_singers_range_gets_plus_12(corpus_f0):
    kal = f0_stats(singer_f0(corpus_f0, "kal"))
    low = singer_f0(corpus_f0, "kal") / 2  # kal's own songs sung an octave lower
    k, reason = suggest_shift(low, kal)
    assert k == 12
    assert reason.startswith("shift +12:") and "100% of the source's 5-95 % range inside" in reason
    assert f"{kal['p5_hz']:.0f}-{kal['p95_hz']:.0f} Hz" in reason  # the singer's range is named
    assert suggest_shift(singer_f0(corpus_f0, "kal") * 2, kal)[0] == -12  # and an octave above: -12
    # one song an octave down (narrower than the singer's range): the median lands inside, the whole range fits
    march = corpus_f0["kal", "march"] / 2
    k, reason = suggest_shift(march, kal)
    shifted = march[march > 0] * 2 ** (k / 12)
    assert kal["p5_hz"] <= np.median(shifted) <= kal["p95_hz"]
    assert kal["p5_hz"] * 2 ** (-0.5 / 12) <= np.percentile(shifted, 5)
    assert np.percentile(shifted, 95) <= kal["p95_hz"] * 2 ** (0.5 / 12)


def test_a_source_inside_the_singers_range_gets_0(corpus_f0):
    kal = f0_stats(singer_f0(corpus_f0, "kal"))
    # the singer's own songs that lie inside its range, and another singer's songs that do
    for singer, song in (("kal", "scale"), ("kal", "lullaby"), ("kal", "march"), ("slt", "scale"), ("slt", "march")):
        src = f0_stats(corpus_f0[singer, song])
        assert kal["p5_hz"] * 2 ** (-0.5 / 12) <= src["p5_hz"] and src["p95_hz"] <= kal["p95_hz"] * 2 ** (0.5 / 12)
        k, reason = suggest_shift(corpus_f0[singer, song], kal)
        assert k == 0 and "the source already fits" in reason, (song, reason)
    # kal's waltz reaches 1.4 semitones above kal's 95th percentile: moved down until it fits
    k, reason = suggest_shift(corpus_f0["kal", "waltz"], kal)
    assert k < 0 and "100% of the source's 5-95 % range inside" in reason


def test_shift_rule_edges():
    singer = f0_stats(np.geomspace(200, 400, 1000))  # an octave, 5-95 % ~ 207-386 Hz
    # no voiced frames: 0, and the reason says why
    assert suggest_shift(np.zeros(500), singer) == (0, "no voiced frames in the source: shift 0")
    # far below (three octaves): bounded to +24, the median as close as it gets
    k, reason = suggest_shift(np.geomspace(30, 40, 300), singer)
    assert k == 24 and "comes closest" in reason
    # a narrow source 3 semitones below the range is moved, to the shift nearest to the singer's median
    src = np.full(300, singer["p5_hz"] * 2 ** (-3 / 12))
    k, _ = suggest_shift(src, singer)
    assert k == round(12 * np.log2(singer["p50_hz"] / src[0]))
    # a source wider than the singer's range: the median inside, as much of it as can be
    wide = np.geomspace(100, 800, 1000)
    k, reason = suggest_shift(wide, singer)
    assert singer["p5_hz"] <= np.median(wide) * 2 ** (k / 12) <= singer["p95_hz"]
    share = np.log2(singer["p95_hz"] / singer["p5_hz"]) / np.log2(np.percentile(wide, 95) / np.percentile(wide, 5))
    assert f"{share:.0%} of the source's 5-95 % range inside" in reason


def test_f0_stats_and_mixed_singers():
    f0 = np.concatenate([np.zeros(50), np.geomspace(100, 400, 901), [np.nan]])
    s = f0_stats(f0)
    voiced = np.geomspace(100, 400, 901)
    for key, q in (("p5_hz", 5), ("p50_hz", 50), ("p95_hz", 95)):
        assert s[key] == pytest.approx(np.percentile(voiced, q), abs=0.01)
    assert s["voiced_frames"] == 901 and s["frames"] == 952
    assert sum(s["hist_counts"]) == 901 and len(s["hist_edges_hz"]) == len(s["hist_counts"]) + 1
    low, high = f0_stats(np.full(100, 110.0)), f0_stats(np.full(300, 220.0))
    mixed = mix_stats([low, high], [1, 1])
    assert mixed["p50_hz"] == pytest.approx(110 * 2 ** 0.5, abs=0.01)  # half way in semitones
    assert mix_stats([low, high], [0, 2])["p50_hz"] == pytest.approx(220.0)
    assert sum(mixed["hist_counts"]) == 400


# ---------------------------------------------------------------- statistics from the pipeline (step 6)
def _dataset(root: Path, corpus_f0) -> None:
    """data_gvc/speaker/<singer>/*.spk.npy and data_gvc/pitch/<singer>/*.pit.npy (real F0) for kal and ked."""
    rng = np.random.default_rng(0)
    for singer in ("kal", "ked"):
        for song in SONGS:
            (root / "speaker" / singer).mkdir(parents=True, exist_ok=True)
            (root / "pitch" / singer).mkdir(parents=True, exist_ok=True)
            np.save(root / "speaker" / singer / f"{song}.spk.npy", rng.standard_normal(256).astype(np.float32))
            np.save(root / "pitch" / singer / f"{song}.pit.npy", corpus_f0[singer, song])


def test_step_6_writes_the_singer_statistics(tmp_path, corpus_f0):
    d = tmp_path / "data_gvc"
    _dataset(d, corpus_f0)
    # as the README runs it: relative paths from the folder holding data_gvc, the pitch folder found beside
    res = subprocess.run([sys.executable, str(REPO / "prepare" / "preprocess_speaker_ave.py"), "data_gvc/speaker/",
                          "data_gvc/singer"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for singer in ("kal", "ked"):
        path = d / "singer" / f"{singer}.f0.json"
        assert path == stats_path(d / "singer" / f"{singer}.spk.npy") and path.is_file()
        stats = json.loads(path.read_text())
        f0 = singer_f0(corpus_f0, singer)
        voiced = f0[f0 > 0]
        for key, q in (("p5_hz", 5), ("p50_hz", 50), ("p95_hz", 95)):
            assert stats[key] == pytest.approx(np.percentile(voiced, q), abs=0.01), key
        assert stats["voiced_frames"] == voiced.size and stats["pitch_files"] == 4
        assert load_singer_stats(d / "singer" / f"{singer}.spk.npy")["p50_hz"] == stats["p50_hz"]
    assert not list((d / "singer").glob("*.tmp*"))  # atomic writes leave nothing behind

    # a singer without pitch files: a warning naming the step, its vector still written, no statistics
    (d / "speaker" / "solo").mkdir()
    np.save(d / "speaker" / "solo" / "a.spk.npy", np.ones(256, np.float32))
    # an unreadable pitch file: that singer fails with one line naming the file, the others are written
    (d / "pitch" / "ked" / "scale.pit.npy").write_bytes(b"not numpy")
    (d / "singer" / "ked.f0.json").unlink()
    res = subprocess.run([sys.executable, str(REPO / "prepare" / "preprocess_speaker_ave.py"), "data_gvc/speaker/",
                          "data_gvc/singer"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "solo: no .pit.npy files in" in res.stderr and "preprocess_f0.py" in res.stderr
    assert "FAILED" in res.stderr and "scale.pit.npy" in res.stderr
    assert (d / "singer" / "solo.spk.npy").is_file() and not (d / "singer" / "solo.f0.json").exists()
    assert not (d / "singer" / "ked.f0.json").exists() and (d / "singer" / "kal.f0.json").is_file()

    # --pitch names another folder
    out = tmp_path / "singer2"
    assert preprocess_speaker_ave.main([str(d / "speaker"), str(out), "--pitch", str(d / "pitch")]) == 1
    assert (out / "kal.f0.json").is_file()


def test_a_singer_without_statistics_gives_one_line_naming_the_step(tmp_path):
    spk = tmp_path / "singer" / "alto.spk.npy"
    spk.parent.mkdir()
    np.save(spk, np.ones(256, np.float32))
    with pytest.raises(KeyStatsError) as err:
        load_singer_stats(spk)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "singer" / "alto.f0.json") in msg
    assert "prepare/preprocess_speaker_ave.py data_gvc/speaker/ data_gvc/singer" in msg
    assert isinstance(err.value, ValueError)
    stats_path(spk).write_text("{ broken")
    with pytest.raises(KeyStatsError, match="unreadable F0 statistics.*preprocess_speaker_ave"):
        load_singer_stats(spk)
    stats_path(spk).write_text(json.dumps({"p5_hz": 300, "p50_hz": 200, "p95_hz": 400, "voiced_frames": 9}))
    with pytest.raises(KeyStatsError, match="invalid F0 statistics"):
        load_singer_stats(spk)
    # several singers: the one without statistics is named
    write_singer_stats(spk, f0_stats(np.full(100, 200.0)))
    other = tmp_path / "singer" / "bass.spk.npy"
    with pytest.raises(KeyStatsError, match="bass.f0.json"):
        auto_shift([spk, other], [0.5, 0.5])
    assert auto_shift([spk, other], [1, 0]).singer == "alto"  # a zero-weight singer is not needed


# ---------------------------------------------------------------- gvc_inference.py --shift auto
@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Recipe-made official-format checkpoints, a 1.6 s cut of a corpus song, and a singer whose statistics are
    those of the song an octave higher."""
    tmp = tmp_path_factory.mktemp("key")
    song = cut_song(CORPUS / "kal" / "scale.wav", tmp / "song.wav", 0.5, 2.1)
    (tmp / "singer").mkdir()
    spk = random_singer(tmp / "singer" / "alto.spk.npy")
    f0 = compute_f0(load_audio(song, 16000), 16000)
    write_singer_stats(spk, f0_stats(f0 * 2))
    return {"gvc": cached_official_checkpoint("gvc_v3"), "bigvgan": cached_official_checkpoint("nsf_bigvgan_generator"),
            "hubert": cached_official_checkpoint("hubert_soft", prefix="module."), "spk": spk, "song": song, "f0": f0,
            "tmp": tmp}


def cli_args(c, *extra):
    return [str(a) for a in ["--model", c["gvc"], "--spk", c["spk"], "--vocoder_model", c["bigvgan"],
                             "--hubert_model", c["hubert"], "--wave", c["song"], "--steps", "1", "--no_png",
                             "--seed", "3", *extra]]


def test_cli_shift_auto_prints_the_shift_and_converts_with_it(cli, tmp_path):
    out = tmp_path / "auto.wav"
    res = subprocess.run([sys.executable, "gvc_inference.py", *cli_args(cli, "--out", out, "--shift", "auto")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "--shift auto" in ln)
    assert "song.wav: --shift auto for alto: shift +12:" in line and "Hz" in line
    # the conversion used it: the same output as --shift 12, sample for sample
    fixed = tmp_path / "fixed.wav"
    assert inference_main(cli_args(cli, "--out", fixed, "--shift", "12")) == 0
    assert np.array_equal(sf.read(out, dtype="int16")[0], sf.read(fixed, dtype="int16")[0])


def test_cli_shift_auto_uses_the_pit_file_and_refuses_a_singer_without_statistics(cli, tmp_path, capsys, caplog):
    pit = tmp_path / "low.pit.npy"
    np.save(pit, cli["f0"] / 2)  # an edited F0 two octaves below the singer: +24
    out = tmp_path / "pit.wav"
    caplog.set_level("INFO")
    assert inference_main(cli_args(cli, "--out", out, "--pit", pit, "--shift", "auto")) == 0
    assert "--shift auto for alto: shift +24:" in caplog.text
    bare = tmp_path / "bare.spk.npy"
    np.save(bare, np.load(cli["spk"]))
    argv = cli_args(cli, "--out", tmp_path / "x.wav", "--shift", "auto")
    argv[argv.index(str(cli["spk"]))] = str(bare)
    assert inference_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {tmp_path / 'bare.f0.json'}: no F0 statistics")
    assert "preprocess_speaker_ave.py" in err[-1] and not (tmp_path / "x.wav").exists()
    with pytest.raises(SystemExit):  # neither a number nor auto
        inference_main(cli_args(cli, "--shift", "up"))


def test_cli_shift_auto_in_folder_mode_is_per_song(cli, tmp_path, caplog):
    songs = tmp_path / "songs"
    songs.mkdir()
    x, sr = sf.read(cli["song"], dtype="float32")
    sf.write(songs / "same.wav", x, sr)
    sf.write(songs / "low.wav", x, sr // 2)  # the same samples at half the rate: an octave lower, twice as long
    caplog.set_level("INFO")
    argv = cli_args(cli, "--out", tmp_path / "out")
    argv[argv.index("--wave") + 1] = str(songs)
    assert inference_main([*argv, "--shift", "auto"]) == 0
    assert "same.wav: --shift auto for alto: shift +12:" in caplog.text
    assert "low.wav: --shift auto for alto: shift +24:" in caplog.text
    assert {p.name for p in (tmp_path / "out").glob("*.wav")} == {"same.wav", "low.wav"}
