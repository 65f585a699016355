"""common/levels.py: a mel outside the range of real log-mels, or a clipped output, gives a warning with the numbers
and the likely cause; real audio does not. gvc_inference prints it (never a silent blast); --steps 0 vocodes the
encoder's prior mel."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from svc_features import cut_song, random_singer

from common.config import load_config
from common.levels import clipping_warning, conversion_warnings, full_scale_reference, mel_range_warning
from common.mel import mel_from_file

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


@pytest.fixture(scope="module")
def data_cfg():
    return load_config().data


def test_real_mels_pass_and_the_references_are_physical(data_cfg):
    ceiling, noise_mean = full_scale_reference(data_cfg)
    assert 1.0 < ceiling < 3.0 and -2.0 < noise_mean < -0.5  # a full-scale square wave, full-scale white noise
    for singer in ("kal", "ked", "slt"):
        assert mel_range_warning(mel_from_file(CORPUS / singer / "waltz.wav", data_cfg), data_cfg) is None
    # the loudest real audio there is: full-scale noise at peak 0.6 (training level) still passes
    noise = torch.from_numpy(np.random.default_rng(1).uniform(-0.6, 0.6, 32000).astype(np.float32))
    from common.mel import mel_from_config

    assert mel_range_warning(mel_from_config(noise, data_cfg), data_cfg) is None
    assert mel_range_warning(torch.zeros(100, 0), data_cfg) is None


def test_an_untrained_models_mel_warns_with_numbers_and_cause(data_cfg):
    mel = torch.randn(100, 400, generator=torch.Generator().manual_seed(0))  # what an untrained decoder gives
    msg = mel_range_warning(mel, data_cfg)
    assert msg is not None and "outside the range of real log-mels" in msg
    assert "untrained" in msg and "--config" in msg
    assert f"{float(mel.min()):.2f}..{float(mel.max()):.2f}" in msg and "100.0 % of frames" in msg
    # too quiet to be audio (below the log floor) is out of range too
    assert "% below -12.5" in mel_range_warning(torch.full((100, 50), -20.0), data_cfg)
    # a few stray frames are not worth a warning (1 % allowed)
    real = mel_from_file(CORPUS / "kal" / "scale.wav", data_cfg)
    real[:, :2] = 5.0
    assert real.shape[1] > 200 and mel_range_warning(real, data_cfg) is None


def test_clipping_warns_above_a_tenth_of_a_percent():
    wav = np.zeros(100000, np.float32)
    wav[:100] = 1.0  # 0.1 %: not yet
    assert clipping_warning(wav) is None
    wav[:1000] = -1.7  # 1 % at or beyond full scale
    msg = clipping_warning(torch.from_numpy(wav))
    assert msg is not None and "1.00 % of its samples are at full scale" in msg and "peak 1.70" in msg
    assert "untrained" in msg
    assert clipping_warning(np.zeros(0)) is None


def test_conversion_warnings_collects_both(data_cfg):
    assert conversion_warnings(torch.full((100, 10), -6.0), np.zeros(3200), data_cfg) == []
    assert len(conversion_warnings(torch.zeros(100, 10), np.ones(3200), data_cfg)) == 2


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """The official-format V3 checkpoint filled with recipe weights (an untrained model) and HuBERT, a song."""
    from golden import cached_official_checkpoint

    tmp = tmp_path_factory.mktemp("levels")
    song = cut_song(CORPUS / "kal" / "scale.wav", tmp / "song.wav", 0.0, 1.2)
    spk = random_singer(tmp / "alto.spk.npy")
    return {"gvc": cached_official_checkpoint("gvc_v3"), "hubert": cached_official_checkpoint("hubert_soft",
                                                                                             prefix="module."),
            "song": song, "spk": spk, "tmp": tmp}


def test_inference_warns_about_an_untrained_model_and_steps_0_is_the_prior(recipe, caplog):
    from conversion import Converter
    from gvc_inference import main

    out = recipe["tmp"] / "out.wav"
    argv = ["--model", recipe["gvc"], "--spk", recipe["spk"], "--hubert_model", recipe["hubert"], "--wave",
            recipe["song"], "--out", out, "--vocoder", "world", "--steps", "2", "--no_png", "--seed", "1"]
    assert main([str(a) for a in argv]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("outside the range of real log-mels" in w and "--config" in w for w in warned), warned
    wav, sr = sf.read(out, dtype="float32")
    assert sr == 32000 and len(wav) > 0
    # --steps 0: the encoder's prior mel mu, no decoder and no noise drawn (so no seed is needed to repeat it)
    conv = Converter(str(recipe["gvc"]), vocoder="world", hubert_model=str(recipe["hubert"]))
    rng = np.random.default_rng(0)
    vec = np.repeat(rng.standard_normal((60, 256)).astype(np.float32), 2, axis=0)
    f0 = np.full(120, 220.0)
    spk = np.load(recipe["spk"])
    prior = conv.acoustic(vec, f0, spk, steps=0)
    out = conv.model.synthesise(torch.from_numpy(vec)[None], torch.from_numpy(f0).float()[None],
                                torch.from_numpy(spk)[None], steps=2)
    assert torch.allclose(prior, out["mu"][0], atol=1e-5) and torch.equal(prior, conv.acoustic(vec, f0, spk, steps=0))
    assert not torch.allclose(prior, out["mel"][0], atol=1e-2)
    assert main([str(a) for a in argv[:-5]] + ["--steps", "-1", "--no_png"]) == 2
