"""gvc_sampler_study.py: the metric, the recommendation rule, and the command on a tiny model."""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.config import load_config, to_dict
from golden import cached_official_checkpoint
from grad.model import GradSVC
from gvc_sampler_study import main, mel_cepstral_distance, recommend, samplers_for

REPO = Path(__file__).resolve().parent.parent


def test_mel_cepstral_distance():
    rng = np.random.default_rng(0)
    mel = torch.from_numpy(rng.standard_normal((100, 50)))
    assert mel_cepstral_distance(mel, mel) == 0
    # a constant offset over all bands only moves c0, which MCD leaves out
    assert mel_cepstral_distance(mel, mel + 3.0) < 1e-9
    # a known change of c1 by d in every frame: MCD = 10 / ln 10 * sqrt(2) * d
    from scipy.fft import idct

    bump = np.zeros((100, 50))
    bump[1] = 0.5
    other = mel + torch.from_numpy(idct(bump, type=2, axis=0, norm="ortho"))
    assert abs(mel_cepstral_distance(mel, other) - 10 / np.log(10) * np.sqrt(2) * 0.5) < 1e-9


def test_recommend_takes_the_cheapest_setting_within_tolerance():
    summary = [{"sampler": "euler", "steps": 8, "nfe": 8, "mcd_db": 0.4},
               {"sampler": "heun", "steps": 2, "nfe": 4, "mcd_db": 0.45},
               {"sampler": "euler", "steps": 2, "nfe": 2, "mcd_db": 3.0}]
    assert recommend(summary, 0.5)["sampler"] == "heun"
    assert recommend(summary, 0.1) is None
    assert samplers_for("rectified") == ["euler", "heun"] and "dpm3" in samplers_for("score")


def test_study_command_on_a_tiny_model(tmp_path, capsys):
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    torch.manual_seed(0)
    model = GradSVC(cfg.grad)
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "version": cfg.grad.version}, ckpt)
    spk = tmp_path / "spk.npy"
    np.save(spk, np.full(256, 1 / 16, np.float32))
    x, sr = sf.read(REPO / "tests" / "fixtures" / "corpus" / "ked" / "march.wav", dtype="float32")
    song = tmp_path / "song.wav"
    sf.write(song, x[: sr], sr)
    code = main(["--model", str(ckpt), "--spk", str(spk), "--wave", str(song), "--steps", "1", "2", "--reference_steps",
                 "8", "--vocoder", "none", "--out", str(tmp_path / "study"), "--tolerance_db", "100",
                 "--hubert_model", str(cached_official_checkpoint("hubert_soft", prefix="module."))])
    assert code == 0
    out = capsys.readouterr().out
    assert "euler:1" in out and "heun:2" in out and "recommended: --solver" in out
    assert (tmp_path / "study" / "study.png").stat().st_size > 0
    import json

    data = json.loads((tmp_path / "study" / "study.json").read_text())
    mcd = {(m["sampler"], m["steps"]): m["mcd_db"] for m in data["summary"]}
    assert mcd[("euler", 2)] < mcd[("euler", 1)]  # more steps, closer to the reference
    # a bad setting or an unreadable song is one line before any sampling, not after the others' work
    base = ["--model", str(ckpt), "--spk", str(spk), "--vocoder", "none", "--out", str(tmp_path / "bad"),
            "--hubert_model", str(cached_official_checkpoint("hubert_soft", prefix="module."))]
    capsys.readouterr()
    assert main(base + ["--wave", str(song), "--steps", "0"]) == 2
    assert "--steps and --reference_steps: at least 1" in capsys.readouterr().err
    assert main(base + ["--wave", str(song), str(tmp_path / "gone.wav")]) == 2
    assert "gone.wav: file not found" in capsys.readouterr().err and not (tmp_path / "bad").exists()
