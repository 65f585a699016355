"""Samplers of the decoder: one function per method, one signature for all, chosen by name.

Every sampler is ``sampler(field, z, mask, mu, steps, process, noise) -> x`` with

* ``field(x, t) -> Tensor``: the estimator with speaker and ``mu`` bound; ``x`` [B, F, T], ``t`` a tensor [B] or
  0-d. For the score process it returns the score of the noisy marginal, for the flow process the velocity.
* ``z`` [B, F, T]: the start state (V2: ``mu + N(0,1)/temperature``; V3: ``N(0,1) * temperature``).
* ``mask`` [B, 1, T] (1 = valid frame), ``mu`` [B, F, T] the prior mean (the score process diffuses towards it).
* ``steps``: number of steps; ``process``: ``VPSchedule`` (score) or ``FlowPath`` (flow / rectified);
  ``noise``: a ``NoiseSource`` for the stochastic samplers (deterministic ones never draw).

Score (V2, VP-SDE ``dx = 0.5 beta(t) (mu - x) dt + sqrt(beta(t)) dW`` on t in [0, 1]):
  ``ml`` (Diff-VC fast maximum-likelihood SDE solver, the V2 default), ``euler_sde`` / ``euler_ode`` (Grad-TTS
  reverse Euler, stochastic / probability flow), ``dpm1`` / ``dpm2`` / ``dpm3`` (multistep DPM-Solver of order
  1-3 on the probability-flow ODE, one estimator call per step).
Flow (V3, ``x_t = (1 - (1 - sigma_min) t) x_0 + t x_1`` from noise at t=0 to mel at t=1):
  ``euler`` (the V3 default, exactly the original's loop) and ``heun`` (second order, two calls per step).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NoiseSource:
    """The N(0, 1) draws of sampling, in order: either given tensors (popped in order) or ``torch.randn``.

    ``NoiseSource(tensors=[...])`` replays noise recorded elsewhere (e.g. the original's draws: see
    ``GradSVC.synthesise``); ``NoiseSource(generator=g)`` draws with ``g`` (bit-reproducible on CPU);
    ``NoiseSource()`` uses the global RNG. ``randn(shape, like)`` returns a tensor of ``like``'s dtype and device.
    """

    def __init__(self, tensors: Iterable[torch.Tensor] | None = None, generator: torch.Generator | None = None):
        self._tensors = list(tensors) if tensors is not None else None
        self._next = 0
        self.generator = generator

    @property
    def remaining(self) -> int:
        """Given tensors not consumed yet (0 when drawing from an RNG)."""
        return 0 if self._tensors is None else len(self._tensors) - self._next

    def randn(self, shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        shape = tuple(shape)
        if self._tensors is not None:
            if self._next >= len(self._tensors):
                raise ValueError(f"noise: draw {self._next + 1} of shape {list(shape)} requested, "
                                 f"but only {len(self._tensors)} tensors were given")
            t = torch.as_tensor(self._tensors[self._next])
            if tuple(t.shape) != shape:
                raise ValueError(f"noise: draw {self._next + 1} has shape {list(t.shape)}, expected {list(shape)}")
            self._next += 1
            return t.to(dtype=like.dtype, device=like.device)
        if self.generator is None:
            return torch.randn(shape, dtype=like.dtype, device=like.device)
        draw = torch.randn(shape, dtype=like.dtype, device=self.generator.device, generator=self.generator)
        return draw.to(like.device)


def as_noise_source(noise, generator: torch.Generator | None = None) -> NoiseSource:
    """``NoiseSource`` from None (use ``generator`` / global RNG), a NoiseSource, or a sequence of tensors."""
    if isinstance(noise, NoiseSource):
        return noise
    if noise is None:
        return NoiseSource(generator=generator)
    if isinstance(noise, torch.Tensor):
        noise = [noise]
    return NoiseSource(tensors=noise)


@dataclass(frozen=True)
class VPSchedule:
    """VP-SDE around ``mu`` with linear ``beta(t) = beta_min + (beta_max - beta_min) t`` (Grad-TTS).

    Given data x_0: ``x_t = alpha_t x_0 + (1 - alpha_t) mu + sigma_t eps`` with ``alpha_t = exp(-cum(t) / 2)``,
    ``cum(t) = int_0^t beta``, ``sigma_t^2 = 1 - alpha_t^2``. Works on floats and tensors.
    """

    beta_min: float = 0.05
    beta_max: float = 20.0

    def beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def cum_beta(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * (t**2)

    def log_alpha(self, t: float) -> float:
        return -0.5 * self.cum_beta(t)

    def sigma(self, t: float) -> float:
        return math.sqrt(-math.expm1(-self.cum_beta(t)))

    def lam(self, t: float) -> float:
        """Half log-SNR: log(alpha_t / sigma_t)."""
        return self.log_alpha(t) - 0.5 * math.log(-math.expm1(-self.cum_beta(t)))

    def t_of_lam(self, lam: float) -> float:
        """Inverse of ``lam``: solve cum(t) = log(1 + exp(-2 lam)) for t >= 0."""
        c = math.log1p(math.exp(-2.0 * lam)) if lam > -20 else -2.0 * lam
        d = self.beta_max - self.beta_min
        return 2.0 * c / (self.beta_min + math.sqrt(self.beta_min**2 + 2.0 * d * c))

    def gamma(self, s, t):
        """exp(-0.5 int_s^t beta): the mean decay from time s to t."""
        return torch.exp(-0.5 * (self.beta_min * (t - s) + 0.5 * (self.beta_max - self.beta_min) * (t**2 - s**2)))


@dataclass(frozen=True)
class FlowPath:
    """OT conditional flow path ``x_t = (1 - (1 - sigma_min) t) x_0 + t x_1`` (sigma_min = 0: rectified flow)."""

    sigma_min: float = 1e-4


# ----------------------------------------------------------------------------------------------- score (V2)

def ml(field: Field, z, mask, mu, steps: int, process: VPSchedule, noise: NoiseSource) -> torch.Tensor:
    """Fast maximum-likelihood reverse SDE solver on the grid t = 1, 1 - h, ..., h (h = 1/n).

    # ML-SDE sampler: Popov et al., "Diffusion-Based Voice Conversion with Fast Maximum Likelihood Sampling
    # Scheme" (Diff-VC, ICLR 2022), Theorem 1; coefficients as in Grad-SVC V2 grad/solver.py MaxLikelihood.
    Each step: x += ((0.5 + omega) (x - mu) + (1 + kappa) score) beta h + sigma N(0, 1), then re-masked.
    The coefficients depend on t only, so they are computed once per step as 0-d tensors in x's dtype (the
    original computed them per batch item with mismatched shapes, which broke batch > 1:
    docs/conventions.md#v2-sampler-and-batches).
    A noise tensor is drawn at every step, also the last, where sigma = 0 (as the original: same RNG order).
    """
    h = 1.0 / steps
    x = z * mask
    batch = z.shape[0]
    for i in range(steps):
        t = torch.tensor(1.0 - i * h, dtype=x.dtype, device=x.device)
        s = t - h
        beta = process.beta(t)
        g_0t = process.gamma(0, t)
        g_0s = process.gamma(0, s)
        g_st = process.gamma(s, t)
        one_m_0t = 1 - g_0t**2
        nu = g_0s * ((1 - g_st**2) / one_m_0t)
        mean_coef = g_st * ((1 - g_0s**2) / one_m_0t)
        kappa = nu * one_m_0t / (g_0t * beta * h) - 1
        omega = (mean_coef - 1) / (beta * h) + (1 + kappa) / one_m_0t - 0.5
        sigma = torch.sqrt((1 - g_0s**2) * (1 - g_st**2) / one_m_0t)
        score = field(x, t.expand(batch))
        dx = ((0.5 + omega) * (x - mu) + (1 + kappa) * score) * beta * h
        x = (x + (dx + noise.randn(x.shape, x) * sigma)) * mask
    return x


def _euler_score(field: Field, z, mask, mu, steps: int, process: VPSchedule, noise: NoiseSource | None):
    # Grad-TTS reverse diffusion: Popov et al., Grad-TTS (ICML 2021), eqs. 8-9 (midpoint times t = 1 - (i + 1/2) h)
    h = 1.0 / steps
    x = z * mask
    batch = z.shape[0]
    for i in range(steps):
        t = torch.tensor(1.0 - (i + 0.5) * h, dtype=x.dtype, device=x.device)
        beta = process.beta(t)
        score = field(x, t.expand(batch))
        if noise is None:
            dx = 0.5 * (mu - x - score) * (beta * h)
        else:
            dx = (0.5 * (mu - x) - score) * (beta * h) + noise.randn(x.shape, x) * torch.sqrt(beta * h)
        x = (x - dx) * mask
    return x


def euler_sde(field: Field, z, mask, mu, steps: int, process: VPSchedule, noise: NoiseSource) -> torch.Tensor:
    """Euler-Maruyama on the reverse SDE ``dx = [0.5 beta (mu - x) - beta score] dt + sqrt(beta) dW`` (t: 1 -> 0)."""
    return _euler_score(field, z, mask, mu, steps, process, noise)


def euler_ode(field: Field, z, mask, mu, steps: int, process: VPSchedule, noise: NoiseSource) -> torch.Tensor:
    """Euler on the probability-flow ODE ``dx = 0.5 beta (mu - x - score) dt`` (t: 1 -> 0); draws no noise."""
    return _euler_score(field, z, mask, mu, steps, process, None)


DPM_T_END = 1e-3  # DPM-Solver stops at t = eps (log-SNR is infinite at t = 0), like LightGrad / Grad-SVC's DPM


def _dpm_multistep(field: Field, z, mask, mu, steps: int, process: VPSchedule, order: int) -> torch.Tensor:
    # Multistep DPM-Solver (noise prediction, "dpmsolver" type): Lu et al., DPM-Solver (NeurIPS 2022) and
    # DPM-Solver++ (2022) sec. 3.3; steps uniform in log-SNR from t = 1 to t = 1e-3, warm-up with lower orders,
    # lower orders at the end too when steps < 10 (as the reference implementation's lower_order_final).
    lam_start, lam_end = process.lam(1.0), process.lam(DPM_T_END)
    lams = [lam_start + (lam_end - lam_start) * k / steps for k in range(steps + 1)]
    times = [1.0] + [process.t_of_lam(v) for v in lams[1:-1]] + [DPM_T_END]
    batch = z.shape[0]
    y = (z - mu) * mask  # the VP process around mu is a standard VP process for y = x - mu

    def eps_at(y, k):
        t = times[k]
        score = field(y + mu, torch.full((batch,), t, dtype=y.dtype, device=y.device))
        return -process.sigma(t) * score

    eps_prev: list[torch.Tensor] = []
    lam_prev: list[float] = []
    for k in range(steps):
        eps_prev.append(eps_at(y, k))
        lam_prev.append(lams[k])
        eps_prev, lam_prev = eps_prev[-3:], lam_prev[-3:]
        step_order = min(order, k + 1) if steps >= 10 else min(order, k + 1, steps - k)
        t_next = times[k + 1]
        h = lams[k + 1] - lam_prev[-1]
        a = math.exp(process.log_alpha(t_next) - process.log_alpha(times[k]))
        sig = process.sigma(t_next)
        phi1 = math.expm1(h)
        e0 = eps_prev[-1]
        y_next = a * y - (sig * phi1) * e0
        if step_order >= 2:
            r0 = (lam_prev[-1] - lam_prev[-2]) / h
            d1_0 = (e0 - eps_prev[-2]) / r0
            if step_order == 2:
                y_next = y_next - (0.5 * sig * phi1) * d1_0
            else:
                r1 = (lam_prev[-2] - lam_prev[-3]) / h
                d1_1 = (eps_prev[-2] - eps_prev[-3]) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi2 = phi1 / h - 1.0
                phi3 = phi2 / h - 0.5
                y_next = y_next - (sig * phi2) * d1 - (sig * phi3) * d2
        y = y_next * mask
    return y + mu * mask


def dpm1(field: Field, z, mask, mu, steps: int, process: VPSchedule, noise: NoiseSource) -> torch.Tensor:
    """DPM-Solver-1 (= DDIM) on the probability-flow ODE, t: 1 -> 1e-3; draws no noise."""
    return _dpm_multistep(field, z, mask, mu, steps, process, 1)


def dpm2(field: Field, z, mask, mu, steps: int, process: VPSchedule, noise: NoiseSource) -> torch.Tensor:
    """Multistep DPM-Solver-2, one estimator call per step, t: 1 -> 1e-3; draws no noise."""
    return _dpm_multistep(field, z, mask, mu, steps, process, 2)


def dpm3(field: Field, z, mask, mu, steps: int, process: VPSchedule, noise: NoiseSource) -> torch.Tensor:
    """Multistep DPM-Solver-3, one estimator call per step, t: 1 -> 1e-3; draws no noise."""
    return _dpm_multistep(field, z, mask, mu, steps, process, 3)


# ------------------------------------------------------------------------------------------------ flow (V3)

def euler(field: Field, z, mask, mu, steps: int, process: FlowPath, noise: NoiseSource) -> torch.Tensor:
    """Euler from t = 0 to 1 on ``linspace(0, 1, n + 1)``: x += dt v(x, t) (0-d t). Exactly the original's loop
    (Matcha-TTS ``solve_euler``, including its t/dt bookkeeping); the state is not masked (padding keeps z)."""
    t_span = torch.linspace(0, 1, steps + 1, device=z.device, dtype=z.dtype)
    t, dt = t_span[0], t_span[1] - t_span[0]
    x = z
    for step in range(1, steps + 1):
        x = x + dt * field(x, t)
        t = t + dt
        if step < steps:
            dt = t_span[step + 1] - t
    return x


def heun(field: Field, z, mask, mu, steps: int, process: FlowPath, noise: NoiseSource) -> torch.Tensor:
    """Heun (explicit trapezoid, 2nd order) on the same grid as ``euler``: two estimator calls per step."""
    t_span = torch.linspace(0, 1, steps + 1, device=z.device, dtype=z.dtype)
    x = z
    for k in range(steps):
        t0, t1 = t_span[k], t_span[k + 1]
        dt = t1 - t0
        v0 = field(x, t0)
        v1 = field(x + dt * v0, t1)
        x = x + (0.5 * dt) * (v0 + v1)
    return x


@dataclass(frozen=True)
class SamplerSpec:
    fn: Callable[..., torch.Tensor]
    kind: str  # "score" or "flow"
    calls_per_step: int


SAMPLERS: dict[str, SamplerSpec] = {
    "ml": SamplerSpec(ml, "score", 1),
    "euler_sde": SamplerSpec(euler_sde, "score", 1),
    "euler_ode": SamplerSpec(euler_ode, "score", 1),
    "dpm1": SamplerSpec(dpm1, "score", 1),
    "dpm2": SamplerSpec(dpm2, "score", 1),
    "dpm3": SamplerSpec(dpm3, "score", 1),
    "euler": SamplerSpec(euler, "flow", 1),
    "heun": SamplerSpec(heun, "flow", 2),
}


def get_sampler(name: str, kind: str) -> Callable[..., torch.Tensor]:
    """The sampler function called ``name`` for a decoder of ``kind`` ("score" or "flow"); ValueError otherwise."""
    spec = SAMPLERS.get(name)
    valid = sorted(k for k, v in SAMPLERS.items() if v.kind == kind)
    if spec is None or spec.kind != kind:
        raise ValueError(f"sampler {name!r} is not available for the {kind} decoder; choose one of {valid}")
    return spec.fn


class SampledDecoder(torch.nn.Module):
    """What ScoreDiffusion and FlowMatching share: an estimator, a process (``VPSchedule`` or ``FlowPath``, the
    subclass's ``process``) and sampling with a sampler chosen by name. Subclasses define ``kind``, ``process`` and
    ``start_state``."""

    kind: str

    def sample(self, mu: torch.Tensor, mask: torch.Tensor, spk: torch.Tensor, steps: int, temperature: float,
               sampler: str, noise: NoiseSource) -> torch.Tensor:
        """mu [B, F, T], mask [B, 1, T], spk [B, n_embs] -> mel [B, F, T] with the named sampler."""
        fn = get_sampler(sampler, self.kind)
        z = self.start_state(mu, temperature, noise)

        def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.estimator(x, mask, mu, t, spk)

        return fn(field, z, mask, mu, steps, self.process, noise)
