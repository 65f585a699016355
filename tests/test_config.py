"""Config: one source per setting; configs and checkpoints written with earlier key names still load."""

import logging

import pytest
import torch

from common.config import REPO_ROOT, ConfigError, config_from_dict, load_config, to_dict

TINY = REPO_ROOT / "configs" / "tiny.yaml"
# the keys an earlier schema stored in every checkpoint's config
OLD_DATA = {"segment_size": 16000, "max_wav_value": 32768.0, "content_sampling_rate": 16000, "content_hop": 320,
            "pitch_hop": 160}


def earlier_config_dict() -> dict:
    d = to_dict(load_config(TINY))
    d["data"].update(OLD_DATA)
    d["grad"]["n_spks"] = d["grad"].pop("spk_dim")
    return d


def test_keys_that_only_mirrored_constants_or_were_never_read_are_gone():
    cfg = load_config()
    assert not set(OLD_DATA) & set(cfg.data)
    assert "n_spks" not in cfg.grad and cfg.grad.spk_dim == 256


def test_a_checkpoint_config_with_the_earlier_keys_loads_with_one_note(caplog):
    with caplog.at_level(logging.INFO, logger="common.config"):
        cfg = config_from_dict(earlier_config_dict())
    assert cfg.grad.spk_dim == 256 and "n_spks" not in cfg.grad
    notes = [r.getMessage() for r in caplog.records if "earlier config" in r.getMessage()]
    assert len(notes) == 1 and "grad.n_spks read as grad.spk_dim" in notes[0] and "data.content_hop" in notes[0]


def test_an_overlay_or_override_with_the_old_speaker_key_is_read(tmp_path):
    overlay = tmp_path / "old.yaml"
    overlay.write_text("grad:\n  n_spks: 128\ndata:\n  segment_size: 8000\n")
    assert load_config(overlay).grad.spk_dim == 128
    assert load_config(overrides=["grad.n_spks=64"]).grad.spk_dim == 64


def test_removed_keys_cannot_be_set_to_another_value_and_names_cannot_disagree(tmp_path):
    with pytest.raises(ConfigError, match=r"data.content_hop = 400 cannot be set: it is 320, fixed by HuBERT-soft"):
        load_config(overrides=["data.content_hop=400"])
    with pytest.raises(ConfigError, match="data.pitch_hop"):
        load_config(overrides=["data.pitch_hop=80"])
    bad = earlier_config_dict()
    bad["grad"]["spk_dim"] = 128
    with pytest.raises(ConfigError, match=r"grad.n_spks \(256\) and its new name grad.spk_dim \(128\) disagree"):
        config_from_dict(bad)


def test_mel_sizes_and_frame_rate_are_cross_checked():
    with pytest.raises(ConfigError, match=r"grad.n_mels \(80\) must equal data.mel_channels \(100\)"):
        load_config(overrides=["grad.n_mels=80"])
    assert load_config(overrides=["grad.n_mels=80", "data.mel_channels=80"]).grad.n_mels == 80
    with pytest.raises(ConfigError, match="must be 100 per second"):
        load_config(overrides=["data.hop_length=160"])


def test_a_checkpoint_written_with_the_earlier_keys_loads(tmp_path):
    from grad.checkpoint import load_gvc_model
    from grad.model import GradSVC

    cfg = load_config(TINY)
    torch.manual_seed(0)
    model = GradSVC(cfg.grad)
    path = tmp_path / "old.pt"
    torch.save({"model": model.state_dict(), "config": earlier_config_dict(), "version": "v3"}, path)
    loaded, loaded_cfg = load_gvc_model(path)
    assert loaded_cfg.grad.spk_dim == 256
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
