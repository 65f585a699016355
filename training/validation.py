"""Validation on rank 0 every ``train.test_step`` epochs: mean validation losses, and the first ``train.test_size``
items synthesised into TensorBoard (mel images; audio when ``train.vocoder`` names a generator). Random-stream
neutral: a run with validation draws what one without it draws."""

from __future__ import annotations

import logging

import numpy as np
import torch
from omegaconf import DictConfig

from common.plots import mel_rgb
from grad.data import collate
from training.checkpoints import rng_neutral
from training.state import TrainState, autocast_context, make_loader, to_device, weighted_total

log = logging.getLogger(__name__)


def validation_loss(state: TrainState) -> dict[str, float]:
    """Mean validation losses (eval mode, decoder loss on, fixed random segments and noise)."""
    model, cfg = state.model, state.cfg
    loader = make_loader(state.valid_set, cfg, state.device, batch_size=cfg.train.batch_size)
    sums: dict[str, float] = {}
    n = 0
    for batch in loader:
        if state.stop_signal:
            break
        batch = to_device(batch, state.device)
        with torch.no_grad(), autocast_context(state.device, cfg.train.precision):
            losses = model(batch, out_size=state.segment, use_decoder=True)
        losses["total"] = weighted_total(losses, cfg.train.loss_weights)
        b = batch["mel"].shape[0]
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n += b
    return {k: v / n for k, v in sums.items()} if n else {}


def validation_synthesis(state: TrainState, vocoder) -> None:
    """Synthesise the first ``test_size`` validation items: mel images (and audio with a vocoder) in TensorBoard."""
    cfg = state.cfg
    gen = torch.Generator(device=state.device).manual_seed(cfg.train.seed)
    for i in range(min(cfg.train.test_size, len(state.valid_set))):
        if state.stop_signal:
            return
        item = collate([state.valid_set[i]])
        batch = to_device(item, state.device)
        out = state.model.synthesise(batch["vec"], batch["pit"], batch["spk"], lengths=batch["lengths"],
                                     steps=cfg.train.synth_steps, temperature=1.0, generator=gen)
        t = int(batch["lengths"][0])
        if not state.logged_ground_truth:
            state.writer.add_image(f"image_{i}/ground_truth", mel_rgb(item["mel"][0, :, :t].numpy()), 0,
                                   dataformats="HWC")
        for key, tag in (("mu", "generated_enc"), ("mel", "generated_dec")):
            mel = out[key][0, :, :t].float().cpu().numpy()
            state.writer.add_image(f"image_{i}/{tag}", mel_rgb(mel), state.steps, dataformats="HWC")
        if vocoder is not None:
            wav = vocoder(out["mel"][:, :, :t].float(), batch["pit"][:, :t])
            state.writer.add_audio(f"audio_{i}/generated", wav, state.steps, sample_rate=cfg.data.sampling_rate)
            if not state.logged_ground_truth:
                ref = vocoder(batch["mel"][:, :, :t], batch["pit"][:, :t])
                state.writer.add_audio(f"audio_{i}/ground_truth_vocoded", ref, 0,
                                       sample_rate=cfg.data.sampling_rate)
    state.logged_ground_truth = True


def load_vocoder(cfg: DictConfig, device: torch.device):
    """``f(mel [1, n_mels, T], f0 [1, T] Hz) -> wav [320 T] float32 in [-1, 1]`` from ``train.vocoder``, or None."""
    if not cfg.train.vocoder:
        return None
    try:
        from bigvgan.model import load_bigvgan, vocode
    except ImportError:
        log.warning("train.vocoder is set but bigvgan.model has no load_bigvgan / vocode: no validation audio")
        return None
    # building the generator draws its random initial weights: not from the training run's streams (rank 0 alone
    # loads it, and a resumed run must draw what the uninterrupted one drew)
    with rng_neutral(device):
        generator = load_bigvgan(cfg.train.vocoder, device=device)
    log.info("validation audio with the vocoder %s", cfg.train.vocoder)

    def run(mel: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        wav = vocode(generator, mel[0], f0[0], chunk=cfg.infer.vocoder_chunk, overlap=cfg.infer.vocoder_overlap,
                     noise_generator=noise)
        return torch.from_numpy(np.asarray(wav, dtype=np.float32)).clamp(-1.0, 1.0)

    return run


def validate(state: TrainState, vocoder) -> dict[str, float]:
    """Validation loss and preview synthesis (rank 0). RNG-neutral: the training run's random streams are untouched."""
    if state.valid_set is None or state.writer is None:
        return {}
    state.model.eval()
    try:
        with rng_neutral(state.device):
            torch.manual_seed(state.cfg.train.seed)
            losses = validation_loss(state)
            for k, v in losses.items():
                state.writer.add_scalar(f"valid/{k}", v, state.steps)
            validation_synthesis(state, vocoder)
    finally:
        state.model.train()
    if losses:
        log.info("epoch %d validation: %s", state.epoch, ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    return losses
