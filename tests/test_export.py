"""gvc_export.py: training checkpoint -> official-layout inference file, read back by grad.checkpoint."""

from __future__ import annotations

import logging

import pytest
import torch
from svc_features import load_script, write_feature_set

from common.config import REPO_ROOT, load_config, to_dict
from grad.checkpoint import load_gvc_model
from grad.model import GradSVC

tr = load_script("gvc_trainer")
ex = load_script("gvc_export")
TINY = str(REPO_ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real trainer checkpoint after one optimizer step (model, Adam state, RNG, config)."""
    root = tmp_path_factory.mktemp("export")
    train, valid = write_feature_set(root / "feat", n_train=2, n_valid=1)
    cfg = load_config(TINY, overrides=[f"train.train_files={train}", f"train.valid_files={valid}",
                                       f"train.log_dir={root / 'logs'}", "data.max_frames=64",
                                       "train.segment_frames=32", "train.fast_epochs=0"])
    state = tr.build_state(cfg, tr.DistEnv(), torch.device("cpu"))
    tr.train_step(state, next(iter(tr.batches(state))))
    state.steps, state.batch_in_epoch = 1, 1
    path = tr.save_checkpoint(state)
    state.writer.close()
    return path


def synth(model: GradSVC) -> dict:
    g = torch.Generator().manual_seed(3)
    vec, pit = torch.randn(1, 50, 256, generator=g), 200 + 100 * torch.rand(1, 50, generator=g)
    spk = torch.randn(1, 256, generator=g) / 16
    return model.synthesise(vec, pit, spk, steps=3, generator=torch.Generator().manual_seed(0))


def test_export_round_trip(trained, tmp_path):
    out = tmp_path / "gvc.pth"
    assert ex.main(["--checkpoint_path", str(trained), "--out", str(out)]) == 0
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert set(exported) == {"model", "config", "version"} and exported["version"] == "v3"
    source = torch.load(trained, map_location="cpu", weights_only=True)
    assert list(exported["model"]) == list(source["model"])  # the model's key order, encoder.speaker.* kept
    assert any(k.startswith("encoder.speaker.") for k in exported["model"])
    for k, v in source["model"].items():
        assert torch.equal(exported["model"][k], v), k
    assert exported["config"] == source["config"]
    assert out.stat().st_size < 0.5 * trained.stat().st_size  # no optimizer state
    a, _ = load_gvc_model(trained)
    b, cfg = load_gvc_model(out)
    assert cfg.grad.dec_dim == 16 and not b.training
    ya, yb = synth(a), synth(b)
    for key in ("mel", "mu"):
        assert torch.equal(ya[key], yb[key]), key
    # the official loader's view: {'model': state_dict} with every key of the model
    model = GradSVC(cfg.grad)
    model.load_state_dict(exported["model"], strict=True)


def test_export_original_training_checkpoint_needs_config(trained, tmp_path):
    source = torch.load(trained, map_location="cpu", weights_only=True)
    original = tmp_path / "grad_svc_7.pt"  # the original trainer's layout: no config
    torch.save({k: source[k] for k in ("model", "optim", "epoch", "steps")}, original)
    out = tmp_path / "gvc.pth"
    assert ex.main(["-p", str(original), "--out", str(out), "-c", TINY]) == 0
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert exported["config"]["grad"] == to_dict(load_config(TINY))["grad"]
    # without -c the base config does not fit the tiny weights: a one-line error, nothing written
    out2 = tmp_path / "other.pth"
    assert ex.main(["-p", str(original), "--out", str(out2)]) == 2
    assert not out2.exists()


def test_export_rejects_incomplete_checkpoint(trained, tmp_path, caplog):
    source = torch.load(trained, map_location="cpu", weights_only=True)
    broken = tmp_path / "broken.pt"
    model = {k: v for k, v in source["model"].items() if not k.startswith("decoder.")}
    torch.save({"model": model, "config": source["config"], "version": "v3"}, broken)
    out = tmp_path / "gvc.pth"
    with caplog.at_level(logging.ERROR):
        assert ex.main(["-p", str(broken), "--out", str(out)]) == 2
    assert "missing" in caplog.text and "decoder." in caplog.text and not out.exists()


def test_export_config_overlay_keeps_what_training_recorded(trained, tmp_path, caplog):
    """-c goes over the checkpoint's stored config: settings recorded at training (the speaker backend) stay, an
    overlay's own keys apply, and an overlay that turns the model into the other version is refused."""
    source = torch.load(trained, map_location="cpu", weights_only=True)
    source["config"]["data"]["speaker_backend"] = "resemblyzer"
    ckpt = tmp_path / "trained.pt"
    torch.save(source, ckpt)
    overlay = tmp_path / "steps.yaml"
    overlay.write_text("grad:\n  n_timesteps: 7\n")
    out = tmp_path / "gvc.pth"
    assert ex.main(["-p", str(ckpt), "--out", str(out), "-c", TINY, "-c", str(overlay)]) == 0
    cfg = torch.load(out, map_location="cpu", weights_only=True)["config"]
    assert cfg["data"]["speaker_backend"] == "resemblyzer" and cfg["grad"]["n_timesteps"] == 7
    assert cfg["grad"]["dec_dim"] == source["config"]["grad"]["dec_dim"]
    to_v2 = tmp_path / "v2.yaml"
    to_v2.write_text("grad:\n  version: v2\n  decoder: score\n  sampler: ml\n")
    with caplog.at_level(logging.ERROR):
        assert ex.main(["-p", str(ckpt), "--out", str(tmp_path / "v2.pth"), "-c", str(to_v2)]) == 2
    assert "checkpoint is version v3 but the config says v2" in caplog.text
    assert not (tmp_path / "v2.pth").exists()
