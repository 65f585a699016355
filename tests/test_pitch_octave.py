"""Octave errors: the --f0_fix octave rule, the dataset check's report of suspects, and gvc_eval's F0 metric on a
perfect conversion (two festival singers singing the same score)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.audio import load_audio
from gvc_eval import f0_metrics
from pitch.f0 import apply_f0_fix, compute_f0, fix_octaves, octave_outliers

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def melody() -> np.ndarray:
    """Rest, 500 ms at 200 Hz, a leap of an octave to 400 Hz held 500 ms, 500 ms at 150 Hz, rest (10 ms frames)."""
    return np.r_[np.zeros(10), np.full(50, 200.0), np.full(50, 400.0), np.full(50, 150.0), np.zeros(10)]


def test_fix_octaves_folds_short_jumps_and_keeps_held_leaps():
    clean = melody()
    np.testing.assert_array_equal(fix_octaves(clean), clean)  # a held octave leap is a note, not an error
    bad = clean.copy()
    bad[30:35] = 400.0  # 50 ms an octave up
    bad[83:86] = 200.0  # 30 ms an octave down inside the 400 Hz note
    bad[135] = 600.0  # one frame two octaves up (the "stray 900-1000 Hz" kind)
    octaves = octave_outliers(bad)
    assert (octaves[30:35] == -1).all() and (octaves[83:86] == 1).all() and octaves[135] == -2
    assert np.count_nonzero(octaves) == 9
    np.testing.assert_allclose(fix_octaves(bad), clean)
    assert (fix_octaves(bad) == 0).sum() == (clean == 0).sum()  # unvoiced stays unvoiced
    # off by default: "none" returns the track as it is
    np.testing.assert_array_equal(apply_f0_fix(bad, "none"), bad)
    np.testing.assert_allclose(apply_f0_fix(bad, "octave"), clean)
    with pytest.raises(ValueError, match="fix"):
        apply_f0_fix(bad, "median")


def test_fix_octaves_catches_a_subharmonic_onset_filling_half_the_window():
    """Praat on festival's ked (committed corpus): the first 110 ms of a note after a rest an octave low. The median
    of +-150 ms lies between the octaves at first; the repeated rule folds it once its neighbours are folded."""
    f0 = compute_f0(load_audio(CORPUS / "ked" / "scale.wav", 16000))
    assert np.allclose(f0[98:109], 87.0, atol=1.0)  # the tracker's error (A2 sung as A1)
    fixed = fix_octaves(f0)
    np.testing.assert_allclose(fixed[98:109], 2 * f0[98:109])
    assert (fixed != f0).sum() == 11  # nothing else moves
    assert (octave_outliers(f0)[98:109] != 0).sum() < 11  # one pass alone does not catch all of it


def test_dataset_check_reports_octave_suspects_and_their_files(tmp_path):
    from prepare.preprocess_zzz import check_filelists, report, warnings_for

    lines = []
    for singer, glitch in (("alto", True), ("bass", False)):
        for name in ("a", "b"):
            base = tmp_path / singer
            base.mkdir(exist_ok=True)
            pit = np.r_[np.zeros(20), np.full(160, 220.0), np.zeros(20)]
            if glitch and name == "b":
                pit[60:64] = 440.0  # 40 ms an octave up
                pit[120] = 960.0  # a stray frame near Praat's ceiling
            torch.save(torch.zeros(100, 200), base / f"{name}.mel.pt")
            np.save(base / f"{name}.vec.npy", np.zeros((100, 256), np.float32))
            np.save(base / f"{name}.pit.npy", pit)
            np.save(base / f"{name}.spk.npy", np.full(256, 0.1, np.float32))
            lines.append("|".join(str(base / f"{name}.{k}") for k in ("mel.pt", "vec.npy", "pit.npy", "spk.npy")))
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    problems, stats = check_filelists([tmp_path / "train.txt"], 100, 256)
    assert problems == []
    summary = report(stats, 100.0)
    alto, bass = summary["alto"], summary["bass"]
    assert alto["suspected_octave_frames"] == 5 and alto["f0_frames_over_900hz"] == 1
    assert list(alto["octave_suspect_files"]) == [str(tmp_path / "alto" / "b.pit.npy")]
    assert bass["suspected_octave_frames"] == 0 and bass["octave_suspect_files"] == {}
    warns = [w for w in warnings_for(summary, None) if "octave" in w]
    assert len(warns) == 1 and warns[0].startswith("alto: 5 F0 frames look like octave errors")
    assert "1 are at 900 Hz or above, in 1 files" in warns[0] and "b.pit.npy" in warns[0] and "--f0_fix" in warns[0]


def test_eval_f0_metric_compensates_lag_and_tracker_octave_errors():
    src = melody()
    late = np.r_[np.zeros(3), src[:-3]]  # the same melody 30 ms later
    m = f0_metrics(late, src)
    assert m["f0_lag_ms"] == 30.0 and m["f0_rmse_cents"] < 1e-9 and m["f0_rpa"] == 1.0 and m["f0_gross_error"] == 0
    assert f0_metrics(late, src, max_lag=0)["f0_rmse_cents"] > 250  # uncompensated, the leaps dominate
    glitch = src.copy()
    glitch[83:87] = 200.0  # the tracker halves 4 frames of the converted 400 Hz note
    m = f0_metrics(glitch, src)
    assert m["f0_rmse_cents"] < 1e-9 and m["f0_rpa"] == 1.0
    raw = f0_metrics(glitch, src, fold=False)
    assert raw["f0_gross_error"] == pytest.approx(4 / 150) and raw["f0_rpa"] == pytest.approx(146 / 150)
    # a real error is not folded: a conversion a semitone flat everywhere
    flat = f0_metrics(src * 2 ** (-1 / 12), src)
    assert flat["f0_rmse_cents"] == pytest.approx(100) and flat["f0_rpa"] == 0 and flat["f0_lag_ms"] == 0


@pytest.mark.parametrize("song", ["scale", "lullaby", "march", "waltz"])
def test_eval_f0_metric_scores_two_festival_singers_as_a_perfect_conversion(song):
    """kal sings every song of the committed corpus 2 semitones above ked: with --shift 2, a perfect conversion."""
    kal = compute_f0(load_audio(CORPUS / "kal" / f"{song}.wav", 16000))
    ked = compute_f0(load_audio(CORPUS / "ked" / f"{song}.wav", 16000))
    m = f0_metrics(kal, ked, shift=2)
    assert m["f0_rmse_cents"] <= 100 and m["f0_corr"] >= 0.9, m
    assert m["f0_rpa"] >= 0.9 and m["f0_gross_error"] <= 0.02, m
    # an octave apart as well: ked's F0 halved is an octave-lower rendition (evaluated with --shift 14)
    assert f0_metrics(kal, ked / 2, shift=14)["f0_rmse_cents"] == pytest.approx(m["f0_rmse_cents"])
    if song == "scale":  # where praat's octave errors made a perfect pair look bad
        raw = f0_metrics(kal, ked, shift=2, fold=False, max_lag=0)
        assert raw["f0_rmse_cents"] > 150 and raw["f0_corr"] < 0.9


def test_every_f0_command_takes_fcpe_and_the_octave_fix(tmp_path):
    """--method fcpe and --f0_fix octave in pitch/inference.py, preprocess_f0.py, gvc_inference.py and gvc_eval.py."""
    from golden import cached_official_checkpoint
    from gvc_eval import Evaluator
    from gvc_eval import main as eval_main
    from gvc_inference import build_parser, make_converter
    from pitch.csv_io import load_csv_pitch
    from pitch.f0 import round_f0
    from pitch.inference import main as pitch_main
    from prepare.preprocess_f0 import main as f0_main

    song = CORPUS / "ked" / "scale.wav"
    wav = load_audio(song, 16000)
    praat, fcpe = compute_f0(wav), compute_f0(wav, method="fcpe")
    assert (fcpe > 0).sum() > 300
    csv = tmp_path / "scale.csv"
    pitch_main(["-w", str(song), "-p", str(csv), "--f0_fix", "octave"])
    np.testing.assert_array_equal(load_csv_pitch(csv), round_f0(fix_octaves(praat)))
    assert not np.array_equal(load_csv_pitch(csv), round_f0(praat))  # ked's scale has an octave error to fold
    pitch_main(["-w", str(song), "-p", str(csv), "--method", "fcpe", "--device", "cpu"])
    np.testing.assert_array_equal(load_csv_pitch(csv), round_f0(fcpe))
    (tmp_path / "w" / "ked").mkdir(parents=True)
    (tmp_path / "w" / "ked" / "scale.wav").write_bytes(song.read_bytes())
    f0_main(["-w", str(tmp_path / "w"), "-p", str(tmp_path / "p"), "-t", "1", "--method", "fcpe", "--f0_fix", "octave"])
    np.testing.assert_array_equal(np.load(tmp_path / "p" / "ked" / "scale.pit.npy"), round_f0(fix_octaves(fcpe)))
    args = build_parser().parse_args(["--model", str(cached_official_checkpoint("gvc_v3")), "--spk", "x.spk.npy",
                                      "--wave", str(song), "--method", "fcpe", "--f0_fix", "octave"])
    converter = make_converter(args)
    assert converter.f0_method == "fcpe" and converter.f0_fix == "octave"
    np.testing.assert_array_equal(converter.f0(wav), fix_octaves(fcpe))
    plain = build_parser().parse_args(["--model", "m", "--spk", "x", "--wave", "w", "--f0", "fcpe"])
    assert plain.f0_method == "fcpe" and plain.f0_fix == "none"  # off by default
    assert Evaluator(f0_method="fcpe").f0(wav).tolist() == fcpe.tolist()
    out = tmp_path / "eval.json"
    code = eval_main(["--converted", str(CORPUS / "kal" / "scale.wav"), "--source", str(song), "--shift", "2",
                      "--method", "fcpe", "--backend", "resemblyzer", "--json", str(out)])
    assert code == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["f0_rmse_cents"] <= 100 and row["f0_rpa"] >= 0.9 and {"f0_gross_error", "f0_lag_ms"} <= set(row)
