"""gvc_eval's report reads without the source code: each metric with its unit, its direction and what it was
computed on; an undefined value says why instead of printing nan."""

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from gvc_eval import f0_metrics, main, metric_lines, report

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def _row(**kw):
    row = {"converted": "/x/song.wav", "seconds": 4.8}
    row.update(kw)
    return row


def test_each_metric_has_unit_direction_and_frames():
    src = np.r_[np.zeros(10), np.full(80, 200.0), np.zeros(10)]
    row = _row(**f0_metrics(src * 2 ** (1 / 12), src), voiced_converted=80, voiced_source=80, spk_sim_target=0.7,
               spk_sim_source=0.5, mcd_db=8.25, mcd_frames=950)
    text = report([row])
    lines = {line.split("  ")[1].strip(): line for line in text.splitlines()[2:]}
    assert "100.0" in lines["F0 error vs the source (RMS, after --shift)"]
    assert "cents" in text and "lower is better" in lines["F0 error vs the source (RMS, after --shift)"]
    assert "80 frames voiced in both (of 100, 10 ms)" in lines["F0 contour correlation (log F0)"]
    assert "higher is better" in lines["F0 contour correlation (log F0)"]
    assert "100 frames (10 ms)" in lines["voicing disagreement (V/UV error)"]
    assert "higher is better" in lines["speaker similarity to the target"]
    assert "lower is better" in lines["speaker similarity to the source"] and "4.8 s" in text
    assert "8.2" in lines["mel-cepstral distortion to --reference"] and "950 DTW-aligned frame pairs" in text


def test_undefined_values_say_why_not_nan():
    silent, src = np.zeros(100), np.r_[np.zeros(20), np.full(80, 200.0)]
    row = _row(**f0_metrics(silent, src), voiced_converted=0, voiced_source=80)
    text = report([row])
    assert "nan" not in text.lower()
    assert "n/a" in text and "undefined: 0 frames voiced in both (conversion voiced in 0, source in 80 of 100)" in text
    flat = f0_metrics(np.full(100, 200.0), np.full(100, 210.0))  # voiced, but no contour to correlate
    assert "F0 is constant" in "\n".join(metric_lines([_row(**flat)], ["value"]))
    # several rows (the demo's conversion and references): each row that is undefined is named
    lines = metric_lines([_row(**flat), row], ["conversion", "oracle"])
    assert any("oracle: undefined: 0 frames voiced in both" in line for line in lines)
    assert "mean over the 2 files" in report([_row(**flat), row])


def test_cli_prints_the_reason_and_writes_null(tmp_path, capsys):
    x, sr = sf.read(CORPUS / "kal" / "scale.wav", dtype="float32")
    conv = tmp_path / "noise.wav"
    sf.write(conv, np.random.default_rng(0).uniform(-0.1, 0.1, len(x)).astype(np.float32), sr)  # unvoiced
    out = tmp_path / "eval.json"
    assert main(["--converted", str(conv), "--source", str(CORPUS / "kal" / "scale.wav"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower() and "undefined: 0 frames voiced in both (conversion voiced in 0" in printed
    assert "cosine" in printed and "lower is better" in printed
    report_json = json.loads(out.read_text())
    assert report_json["rows"][0]["f0_rmse_cents"] is None and report_json["mean"]["f0_rmse_cents"] is None
    assert report_json["metrics"]["f0_rmse_cents"] == {"label": "F0 error vs the source (RMS, after --shift)",
                                                       "unit": "cents", "better": "lower"}
