"""GradSVC model: shapes, masks, losses, gradients, synthesis with every sampler, configs and the loader."""

import copy
import json

import pytest
import torch
from torch.nn import functional as F

from common.checkpoint import CheckpointError
from common.config import REPO_ROOT, load_config, to_dict
from grad.checkpoint import load_gvc_model, read_gvc_checkpoint
from grad.estimator import UNetEstimator
from grad.estimator_cpu import CPUUNetEstimator
from grad.model import LOSS_KEYS, GradSVC
from grad.samplers import SAMPLERS
from grad.utils import fix_len_compatibility, sequence_mask

CONFIGS = REPO_ROOT / "configs"
MANIFEST = REPO_ROOT / "tests" / "fixtures" / "reference" / "manifests" / "gvc_v3.json"


def inputs(b=2, t=24, lengths=(24, 17), seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths[:b])
    mask = sequence_mask(lengths, t).float()
    vec = torch.randn(b, t, 256, generator=g) * mask[..., None]
    pit = (150 + 100 * torch.rand(b, t, generator=g)) * mask
    pit[:, 3:6] = 0.0  # unvoiced frames
    spk = torch.nn.functional.normalize(torch.randn(b, 256, generator=g), dim=-1)
    mel = (torch.randn(b, 100, t, generator=g) - 5.0) * mask[:, None]
    return vec, pit, spk, lengths, mel


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return GradSVC(load_config().grad)


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(CONFIGS / "tiny.yaml")


def tiny_model(cfg, **grad_overrides):
    g = cfg.grad.copy()
    for k, v in grad_overrides.items():
        setattr(g, k, v)
    torch.manual_seed(1)
    return GradSVC(g).eval()


def test_state_dict_keys_are_the_official_ones(base):
    manifest = json.loads(MANIFEST.read_text())["state_dict"]
    state = base.state_dict()
    assert list(state) == list(manifest)
    assert all(list(state[k].shape) == v["shape"] for k, v in manifest.items())
    assert sum(p.numel() for p in base.parameters()) == 33_886_191


def test_encode_shapes_and_mask(base):
    vec, pit, spk, lengths, _ = inputs()
    with torch.inference_mode():
        mu, mask = base.eval().encode(vec, pit, spk, lengths)
    assert mu.shape == (2, 100, 24) and mask.shape == (2, 1, 24) and mask.dtype == vec.dtype
    assert torch.equal(mask[:, 0], sequence_mask(lengths, 24).float())
    assert torch.all(mu[1, :, 17:] == 0) and torch.isfinite(mu).all()
    with pytest.raises(ValueError, match="multiple of 4"):
        base.encode(vec[:, :23], pit[:, :23], spk, torch.tensor([23, 17]))


def test_compute_loss_keys_finite_and_gradients_reach_every_part(base):
    vec, pit, spk, lengths, mel = inputs()
    base.train()
    base.zero_grad()
    losses = base.compute_loss(mel, lengths, vec, pit, spk, out_size=8, generator=torch.Generator().manual_seed(2))
    assert set(losses) == set(LOSS_KEYS)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    assert float(losses["diff"].detach()) > 0
    sum(losses.values()).backward()
    missing = [n for n, p in base.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    groups = ("pit_emb", "spk_emb", "encoder.prenet", "encoder.speaker", "encoder.encoder", "encoder.proj_m",
              "decoder.estimator")
    for group in groups:
        norm = sum(float(p.grad.abs().sum()) for n, p in base.named_parameters() if n.startswith(group))
        assert norm > 0, group
    base.zero_grad()
    base.eval()


def test_speaker_loss_gradient_is_reversed_into_the_prenet(base):
    """The GRL: the speaker loss pushes the prenet AWAY from what the classifier descends towards."""
    vec, pit, spk, lengths, _ = inputs(b=1, t=16, lengths=(16,))
    mask = sequence_mask(lengths, 16).unsqueeze(1).float()
    prenet = base.encoder.prenet(vec.transpose(1, 2), mask).detach().requires_grad_(True)
    pred = base.encoder.speaker(prenet, mask)
    loss = 1 - torch.nn.functional.cosine_similarity(spk, pred, dim=-1).mean()
    (g_rev,) = torch.autograd.grad(loss, prenet)
    plain = base.encoder.speaker.classifier[1:]
    pred2 = (plain(prenet) * mask).sum(-1) / mask.sum(-1)
    loss2 = 1 - torch.nn.functional.cosine_similarity(spk, pred2, dim=-1).mean()
    (g_plain,) = torch.autograd.grad(loss2, prenet)
    torch.testing.assert_close(g_rev, -g_plain)


def test_compute_loss_without_segments_and_without_decoder(tiny_cfg):
    model = tiny_model(tiny_cfg).train()
    vec, pit, spk, lengths, mel = inputs()
    full = model.compute_loss(mel, lengths, vec, pit, spk, out_size=None)
    assert all(torch.isfinite(v) for v in full.values())
    longer = model.compute_loss(mel, lengths, vec, pit, spk, out_size=500)  # not shorter than T: whole sequence
    assert torch.isfinite(longer["diff"])
    model.zero_grad()
    enc_only = model.compute_loss(mel, lengths, vec, pit, spk, use_decoder=False)
    assert float(enc_only["diff"]) == 0.0
    sum(enc_only.values()).backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    # eval mode: no perturbation, so the encoder losses are deterministic
    model.eval()
    a = model.compute_loss(mel, lengths, vec, pit, spk, use_decoder=False)
    b = model.compute_loss(mel, lengths, vec, pit, spk, use_decoder=False)
    assert all(torch.equal(a[k], b[k]) for k in ("prior", "mel", "spk"))


@pytest.mark.parametrize("decoder,samplers", [("score", ["ml", "euler_sde", "euler_ode", "dpm1", "dpm2", "dpm3"]),
                                              ("flow", ["euler", "heun"]), ("rectified", ["euler", "heun"])])
def test_batch_synthesis_with_every_sampler(tiny_cfg, decoder, samplers):
    model = tiny_model(tiny_cfg, decoder=decoder, sampler=samplers[0])
    assert model.decoder.kind == SAMPLERS[samplers[0]].kind
    if decoder == "rectified":
        assert model.decoder.sigma_min == 0.0
    vec, pit, spk, lengths, _ = inputs(b=2, t=22, lengths=(22, 13))
    for name in samplers:
        out = model.synthesise(vec, pit, spk, lengths, steps=3, sampler=name,
                               generator=torch.Generator().manual_seed(3))
        assert out["mel"].shape == (2, 100, 22) and out["mu"].shape == (2, 100, 22), name
        assert out["mask"].shape == (2, 1, 22) and torch.isfinite(out["mel"]).all(), name
        assert not out["mel"].requires_grad
        again = model.synthesise(vec, pit, spk, lengths, steps=3, sampler=name,
                                 generator=torch.Generator().manual_seed(3))
        assert torch.equal(out["mel"], again["mel"]), f"{name}: not reproducible"


def test_synthesis_defaults_padding_and_noise_injection(tiny_cfg):
    model = tiny_model(tiny_cfg)  # V3 flow, euler, tiny config's 4 steps
    vec, pit, spk, _, _ = inputs(b=1, t=21, lengths=(21,))
    t_pad = fix_len_compatibility(21)
    z = torch.randn(1, 100, t_pad, generator=torch.Generator().manual_seed(4))
    out = model.synthesise(vec, pit, spk, noise=[z])
    same = model.synthesise(vec, pit, spk, steps=4, temperature=1.015, sampler="euler", noise=[z])
    assert out["mel"].shape == (1, 100, 21) and torch.equal(out["mel"], same["mel"])
    # a seeded generator draws the same start noise
    gen = model.synthesise(vec, pit, spk, generator=torch.Generator().manual_seed(4))
    assert torch.equal(gen["mel"], out["mel"])
    with pytest.raises(ValueError, match="shape"):
        model.synthesise(vec, pit, spk, noise=[z[..., :21]])
    with pytest.raises(ValueError, match="not available for the flow decoder"):
        model.synthesise(vec, pit, spk, sampler="ml")


def test_tiny_config_builds_small(tiny_cfg, base):
    model = tiny_model(tiny_cfg)
    n_tiny = sum(p.numel() for p in model.parameters())
    assert n_tiny < sum(p.numel() for p in base.parameters()) / 3
    assert model.encoder.prenet.proj.out_channels == tiny_cfg.grad.n_enc_channels


def test_fresh_prenet_projection_is_zero_so_mu_ignores_the_units(tiny_cfg):
    """As the original's ConvReluNorm: the prenet's output projection starts at zero (weight and bias), so before
    any training mu depends on pitch and speaker only (docs/conventions.md#prenet-output-starts-at-zero)."""
    torch.manual_seed(5)
    model = GradSVC(tiny_cfg.grad).eval()
    state = model.state_dict()
    assert torch.count_nonzero(state["encoder.prenet.proj.weight"]) == 0
    assert torch.count_nonzero(state["encoder.prenet.proj.bias"]) == 0
    vec, pit, spk, lengths, _ = inputs()
    other_vec, other_pit, other_spk, _, _ = inputs(seed=1)
    with torch.inference_mode():
        mu, _ = model.encode(vec, pit, spk, lengths)
        mu_units, _ = model.encode(other_vec, pit, spk, lengths)
        mu_pitch, _ = model.encode(vec, other_pit, spk, lengths)
        mu_speaker, _ = model.encode(vec, pit, other_spk, lengths)
    assert torch.equal(mu_units, mu)  # other units: the same mu
    assert (mu_pitch - mu).abs().max() > 1e-3 and (mu_speaker - mu).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------- loader


def save(path, obj):
    torch.save(obj, path)
    return path


def test_loader_round_trip_of_our_checkpoint(tiny_cfg, tmp_path):
    model = tiny_model(tiny_cfg)
    path = save(tmp_path / "ours.pth", {"model": model.state_dict(), "config": to_dict(tiny_cfg), "version": "v3"})
    loaded, cfg = load_gvc_model(path)  # the config comes from the file
    assert cfg.grad.dec_dim == tiny_cfg.grad.dec_dim and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    state, cfg_dict, meta = read_gvc_checkpoint(path)
    assert meta == {"format": "ours", "version": "v3"} and cfg_dict["grad"]["dec_dim"] == tiny_cfg.grad.dec_dim


def test_loader_official_and_training_formats(tiny_cfg, tmp_path):
    model = tiny_model(tiny_cfg)
    state = model.state_dict()
    official = save(tmp_path / "gvc.pretrain.pth", {"model": state})
    assert read_gvc_checkpoint(official)[2]["format"] == "official"
    loaded, cfg = load_gvc_model(official, tiny_cfg)
    assert cfg is tiny_cfg and torch.equal(loaded.pit_emb.weight, model.pit_emb.weight)
    training = save(tmp_path / "grad_svc_10.pt", {"model": state, "optim": {}, "epoch": 10, "steps": 99})
    _, _, meta = read_gvc_checkpoint(training)
    assert meta["format"] == "training" and meta["epoch"] == 10 and meta["steps"] == 99
    # the training-only speaker classifier may be absent for inference, not for training
    no_spk = save(tmp_path / "slim.pth", {"model": {k: v for k, v in state.items()
                                                   if not k.startswith("encoder.speaker.")}})
    load_gvc_model(no_spk, tiny_cfg)
    with pytest.raises(CheckpointError, match="missing"):
        load_gvc_model(no_spk, tiny_cfg, for_training=True)


def test_loader_errors(tiny_cfg, tmp_path):
    model = tiny_model(tiny_cfg)
    state = model.state_dict()
    broken = dict(state)
    del broken["decoder.estimator.final_conv.bias"]
    path = save(tmp_path / "broken.pth", {"model": broken})
    with pytest.raises(CheckpointError, match=r"broken\.pth: missing 1 keys.*final_conv\.bias"):
        load_gvc_model(path, tiny_cfg)
    with pytest.raises(CheckpointError, match="pretrained file not found"):
        load_gvc_model(tmp_path / "nope.pth", tiny_cfg)
    with pytest.raises(CheckpointError, match="not a GradSVC checkpoint"):
        load_gvc_model(save(tmp_path / "list.pth", [1, 2]), tiny_cfg)
    # shapes of another config
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_gvc_model(save(tmp_path / "tiny.pth", {"model": state}), load_config())
    # V2 and V3 files share keys: a stored version must agree with the config
    v2_in_v3 = save(tmp_path / "v2.pth", {"model": state, "config": to_dict(tiny_cfg), "version": "v2"})
    with pytest.raises(CheckpointError, match="version v2 but the config says v3"):
        load_gvc_model(v2_in_v3)
    no_cfg = save(tmp_path / "v2_nocfg.pth", {"model": state, "version": "v2"})
    with pytest.raises(CheckpointError, match="version v2 but the config says v3"):
        load_gvc_model(no_cfg, tiny_cfg)
    v2_cfg = load_config(CONFIGS / "tiny.yaml", CONFIGS / "v2.yaml")
    loaded, cfg = load_gvc_model(no_cfg, v2_cfg)
    assert cfg.grad.version == "v2" and loaded.decoder.kind == "score"


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this torch build has no NNPACK")
def test_cpu_estimator_matches_the_reference_u_net(base):
    """The CPU inference U-Net (NNPACK Winograd 3x3 convolutions, the transposed convolutions as 4-phase 3x3 ones,
    channels-first 1x1 GEMMs, the gated linear attention folded into one matrix, the algebraic Mish, mask products
    skipped when every frame is valid) loads the reference's state dict and computes the same field, padded frames
    stay zero, and it refuses to record gradients (training uses the reference, which autograd mode never
    changes)."""
    est = copy.deepcopy(base.decoder.estimator)
    assert type(est) is UNetEstimator  # GradSVC's default: the reference
    with torch.no_grad():  # open the Rezero gates (0 at initialisation) so the attention counts
        for name, p in est.named_parameters():
            if name.endswith(".g"):
                p.fill_(0.8)
    fast_est = CPUUNetEstimator(96)
    fast_est.load_state_dict(est.state_dict())  # strict: the same keys and shapes
    g = torch.Generator().manual_seed(3)
    t_len = 48
    x, mu = torch.randn(2, 100, t_len, generator=g), torch.randn(2, 100, t_len, generator=g)
    spk, t = torch.randn(2, 64, generator=g), torch.tensor([0.3, 0.8])
    for mask in (torch.ones(2, 1, t_len), sequence_mask(torch.tensor([48, 37]), t_len).float()[:, None]):
        with torch.inference_mode():
            fast = fast_est(x, mask, mu, t, spk)
            plain = est(x, mask, mu, t, spk)
        assert (fast - plain).abs().max() <= 5e-5 * plain.abs().max()  # Winograd F(6x6, 3x3) in float32: ~1e-5
        assert torch.equal(fast * (1 - mask), torch.zeros_like(fast))
    with torch.enable_grad():
        trained = est(x, mask, mu, t, spk)
        with pytest.raises(RuntimeError, match="inference"):
            fast_est(x, mask, mu, t, spk)
    assert trained.requires_grad
    assert torch.equal(trained.detach(), plain)


def test_cpu_kernels_are_chosen_by_the_config_for_inference_only(tiny_cfg, tmp_path):
    """``infer.cpu_kernels`` (default true) gives a loaded model the CPU U-Net for inference; a model loaded for
    training, or with the key false, and ``GradSVC`` built directly, get the reference."""
    assert tiny_cfg.infer.cpu_kernels is True
    path = save(tmp_path / "gvc.pth", {"model": tiny_model(tiny_cfg).state_dict()})
    assert type(load_gvc_model(path, tiny_cfg)[0].decoder.estimator) is CPUUNetEstimator
    assert type(load_gvc_model(path, tiny_cfg, for_training=True)[0].decoder.estimator) is UNetEstimator
    off = load_config(CONFIGS / "tiny.yaml", overrides=["infer.cpu_kernels=false"])
    assert type(load_gvc_model(path, off)[0].decoder.estimator) is UNetEstimator
    assert type(GradSVC(tiny_cfg.grad, cpu_kernels=True).decoder.estimator) is CPUUNetEstimator


def test_cpu_estimator_without_nnpack_or_float32_is_the_reference(monkeypatch):
    """Where its kernels do not apply (NNPACK missing or refused, float64) the CPU U-Net runs the reference forward:
    the same numbers, bit for bit."""
    import grad.estimator_cpu as cpu

    torch.manual_seed(5)
    ref = UNetEstimator(8).eval()
    fast = CPUUNetEstimator(8).eval()
    fast.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(6)
    x, mu, spk = torch.randn(2, 100, 16, generator=g), torch.randn(2, 100, 16, generator=g), torch.randn(2, 64)
    mask, t = sequence_mask(torch.tensor([16, 9]), 16).float()[:, None], torch.tensor([0.2, 0.9])
    with torch.inference_mode():
        expected = ref(x, mask, mu, t, spk)
        monkeypatch.setattr(cpu, "_NNPACK", False)
        assert torch.equal(fast(x, mask, mu, t, spk), expected)
        monkeypatch.undo()
        args64 = [a.double() for a in (x, mask, mu, t, spk)]
        assert torch.equal(fast.double()(*args64), ref.double()(*args64))


def test_algebraic_mish_matches_torch():
    """mish_ (x - 2x / ((1 + e^x)^2 + 1), in blocks) equals F.mish within float32 rounding over the whole range,
    in place, across block boundaries; other layouts (channels-last, strided) go to torch's Mish in place."""
    from grad.estimator_cpu import _MISH_BLOCK, mish_

    x = torch.cat([torch.linspace(-100, 100, 20001), torch.randn(_MISH_BLOCK + 777) * 4, torch.tensor([-1e4, 1e4])])
    ref = F.mish(x)
    y = x.clone()
    assert mish_(y) is y
    assert (y - ref).abs().max() <= 1e-6 * max(1.0, float(x.abs().max()))
    assert ((y - ref).abs() <= 1e-6 * (1 + x.abs())).all()
    img = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    out = mish_(img.clone())
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.mish(img), rtol=0, atol=2e-6)
    strided = torch.randn(6, 10)[:, ::2]
    expected = F.mish(strided)
    assert mish_(strided) is strided  # no 1-D view of a strided tensor: torch's own Mish, in place
    torch.testing.assert_close(strided, expected, rtol=0, atol=0)


def test_loader_says_which_version_it_assumed_for_an_official_file(tmp_path, caplog):
    """Official files store no version (V2 and V3 keys are equal): the log line names the assumption and the
    release each version comes from."""
    import logging

    cfg = load_config(str(REPO_ROOT / "configs" / "tiny.yaml"))
    path = tmp_path / "gvc.pth"
    torch.save({"model": GradSVC(cfg.grad).state_dict()}, path)
    with caplog.at_level(logging.INFO):
        load_gvc_model(path, cfg)
    assert "as v3" in caplog.text and "20230930" in caplog.text and "configs/v2.yaml" in caplog.text
