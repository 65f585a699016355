"""gvc_eval metrics: each one checked against a case with a known answer."""

from pathlib import Path

import numpy as np
import soundfile as sf

from gvc_eval import cosine, f0_metrics, mcd_dtw

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def test_f0_metrics_known_offsets():
    src = np.r_[np.zeros(10), np.full(80, 200.0), np.zeros(10)]
    same = f0_metrics(src, src)
    assert same["f0_rmse_cents"] == 0 and same["vuv_error"] == 0 and same["voiced_both"] == 80
    # a conversion one semitone sharp: 100 cents, and exactly right when evaluated with --shift 1
    sharp = src * 2 ** (1 / 12)
    assert abs(f0_metrics(sharp, src)["f0_rmse_cents"] - 100) < 1e-6
    assert f0_metrics(sharp, src, shift=1)["f0_rmse_cents"] < 1e-6
    # voicing disagreement on 10 of 100 frames; lengths differing are cut to the shorter
    conv = src.copy()
    conv[10:20] = 0
    m = f0_metrics(np.r_[conv, np.full(5, 100.0)], src)
    assert m["frames"] == 100 and abs(m["vuv_error"] - 0.1) < 1e-9
    # correlation follows the melody's shape, not its offset
    melody = np.r_[np.linspace(180, 260, 50), np.linspace(260, 150, 50)]
    assert f0_metrics(melody * 1.5, melody)["f0_corr"] > 0.999
    assert f0_metrics(40000.0 / melody, melody, max_lag=0)["f0_corr"] < -0.999  # mirrored contour, as timed
    assert f0_metrics(40000.0 / melody, melody)["f0_corr"] < -0.9  # the best lag within 50 ms cannot save it


def test_cosine():
    a = np.array([1.0, 0, 0])
    assert abs(cosine(a, a) - 1) < 1e-9 and abs(cosine(a, np.array([0, 1.0, 0]))) < 1e-12 and cosine(a, -a) < -0.99


def test_mcd_is_zero_for_the_same_audio_and_larger_for_another_singer():
    kal, sr = sf.read(CORPUS / "kal" / "scale.wav", dtype="float32")
    ked, _ = sf.read(CORPUS / "ked" / "scale.wav", dtype="float32")
    assert mcd_dtw(kal, kal, sr) < 1e-6
    shifted = np.r_[np.zeros(400, np.float32), kal]  # DTW absorbs a 25 ms delay
    assert mcd_dtw(kal, shifted, sr) < 1.0
    assert mcd_dtw(kal, ked, sr) > 2.0


def test_cli_refuses_other_encoder_embeddings_and_names_unpaired_files(tmp_path, capsys):
    """A --target_spk tagged for another speaker encoder is refused (similarities across encoders mean nothing); a
    converted song without its --source is named as failed, not a row of blanks; a missing --source is one line."""
    import json

    from gvc_eval import main

    conv = tmp_path / "conv"
    conv.mkdir()
    x, sr = sf.read(CORPUS / "kal" / "scale.wav", dtype="float32")
    sf.write(conv / "scale.wav", x, sr)
    sf.write(conv / "zz.wav", x[: sr // 2], sr)
    tagged = tmp_path / "lstm_singers"
    tagged.mkdir()
    (tagged / "backend.json").write_text(json.dumps({"backend": "lstm", "dim": 256}))
    np.save(tagged / "kal.spk.npy", np.full(256, 1 / 16, np.float32))
    argv = ["--converted", str(conv), "--target_spk", str(tagged / "kal.spk.npy")]
    assert main(argv + ["--backend", "resemblyzer"]) == 2
    assert "'lstm', but 'resemblyzer'" in capsys.readouterr().err
    assert main(argv + ["--checkpoint", str(tmp_path / "no_lstm.pth.tar")]) == 2  # the tag picks lstm: its file
    assert "no_lstm.pth.tar: pretrained file not found" in capsys.readouterr().err
    assert main(["--converted", str(conv), "--source", str(tmp_path / "nope")]) == 2
    assert "nope: --source file or folder not found" in capsys.readouterr().err
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "scale.wav", x, sr)
    out = tmp_path / "new" / "eval.json"
    assert main(["--converted", str(conv), "--reference", str(src), "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 1 and report["rows"][0]["mcd_db"] < 1e-6
    assert report["failed"] == [f"{conv / 'zz.wav'}: no --reference file of the same name"]
