"""gvc_demo's training step: the real trainer for a wall-time budget, its losses printed as it goes, stopped and
saved on time; a failing trainer is one line plus its last log lines."""

import subprocess
import sys
from pathlib import Path

import pytest
from svc_features import write_feature_set

import gvc_demo

REPO = Path(__file__).resolve().parent.parent


def test_training_prints_progress_and_stops_on_time(tmp_path, capsys):
    train, valid = write_feature_set(tmp_path / "feat")
    cmd = [sys.executable, REPO / "gvc_trainer.py", "-c", REPO / "configs" / "tiny.yaml", "-c",
           REPO / "configs" / "demo.yaml", "--device", "cpu", f"train.train_files={train}",
           f"train.valid_files={valid}", "train.log_dir=logs/demo", "data.max_frames=64", "train.segment_frames=32"]
    gvc_demo.train_for(cmd, tmp_path, minutes=0.5, every=1.0)
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith("[demo] train 0:")]
    assert progress and all("/ 0:30  epoch" in line and "prior" in line for line in progress), out
    last = out.strip().splitlines()[-1]
    assert last.startswith("[demo] train: 0:") and " steps; last epoch" in last, out
    steps = int(last.split(", ")[1].split()[0])
    assert steps > 0 and gvc_demo.list_checkpoints(tmp_path)  # saved on the way out (SIGTERM, as Ctrl-C)
    assert "signal" not in out  # our own stop is not reported as a problem


def test_a_failing_trainer_stops_the_demo_with_its_log(tmp_path, capsys):
    cmd = [sys.executable, "-c", "import sys; print('12:00:00 ERROR files/train.txt: no usable items'); sys.exit(2)"]
    with pytest.raises(SystemExit, match=r"step failed \(train\), exit status 2"):
        gvc_demo.train_for(cmd, tmp_path, minutes=1.0)
    captured = capsys.readouterr()
    assert "no usable items" in captured.err and "train: ERROR files/train.txt" in captured.out


def test_the_conversion_is_made_in_the_target_singers_key():
    assert gvc_demo.key_shift("kal", "ked") == -2 and gvc_demo.key_shift("ked", "kal") == 2
    assert subprocess.run([sys.executable, REPO / "gvc_demo.py", "--help"], capture_output=True).returncode == 0


def test_metrics_are_printed_beside_the_two_references(capsys):
    rows = [{"converted": n, "seconds": 4.8, "frames": 480, "voiced_both": vb, "voiced_converted": vb,
             "voiced_source": 445, "vuv_error": 0.01, "f0_rmse_cents": c, "f0_corr": 0.95, "spk_sim_target": 0.7,
             "spk_sim_source": 0.6, "mcd_db": 10.8, "mcd_frames": 970}
            for n, vb, c in (("conversion", 444, 97.2), ("identity floor", 0, None), ("oracle", 412, 25.6))]
    gvc_demo.print_metrics(rows, ["conversion", "identity floor", "oracle"], "kal", "waltz")
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "metric" in line and "conversion" in line)
    assert "identity floor" in header and "oracle" in header and "unit" in header and "better" in header
    assert "97.2" in out and "25.6" in out and "lower is better" in out and "nan" not in out.lower()
    assert "identity floor: undefined: 0 frames voiced in both" in out
