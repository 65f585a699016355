"""Sampler correctness without training: exact fields of Gaussian data drive every sampler.

Data: each element is N(m, s^2) with known m, s (different per element). Then the noisy marginals stay Gaussian:
* score process (VP-SDE around mu): x_t ~ N(a m + (1 - a) mu, a^2 s^2 + 1 - a^2), a = exp(-cum_beta(t) / 2), so the
  exact score is -(x - mean_t) / var_t and the probability-flow ODE maps quantiles to quantiles;
* flow path x_t = (1 - (1 - sigma) t) z + t x_1: x_t ~ N(t m, (1 - (1 - sigma) t)^2 + t^2 s^2) and the exact
  (marginal) velocity is m + (t s^2 - (1 - sigma)(1 - (1 - sigma) t)) / var_t * (x - t m).
Each sampler, started from its own start distribution, must return samples whose standardised values (x - m) / s
have mean 0 and variance 1 within the stated tolerances; the ODE samplers are also compared with the exact ODE
solution from the same noise, which shows the orders (DPM-Solver-2/3 and Heun beat the first-order methods).
"""

import math

import pytest
import torch

from grad.samplers import (
    DPM_T_END,
    SAMPLERS,
    FlowPath,
    NoiseSource,
    VPSchedule,
    as_noise_source,
    get_sampler,
    ml,
)

F, T = 2, 4
M = torch.linspace(-2.0, 2.0, F * T, dtype=torch.float64).view(1, F, T)  # data means
S = torch.linspace(0.3, 1.0, F * T, dtype=torch.float64).view(1, F, T)  # data standard deviations
MU = M + 0.7  # the prior mean of the score process (as the encoder output; deliberately off the data mean)
MASK = torch.ones(1, 1, T, dtype=torch.float64)
VP = VPSchedule(0.05, 20.0)
N_SAMPLES = 4000
MEAN_TOL = 0.04  # |mean of standardised samples|; the standard error is ~0.006 with 4000 x 8 values
VAR_TOL = 0.06  # |variance - 1|; the standard error is ~0.008


def score_field(m=M, s=S, mu=MU):
    def field(x, t):
        t = t.reshape(-1, 1, 1)
        a = torch.exp(-0.5 * VP.cum_beta(t))
        var = a**2 * s**2 + 1 - a**2
        return -(x - (a * m + (1 - a) * mu)) / var

    return field


def flow_field(sigma, m=M, s=S):
    def field(x, t):
        t = t.reshape(-1, 1, 1) if t.dim() else t
        var = (1 - (1 - sigma) * t) ** 2 + t**2 * s**2
        return m + (t * s**2 - (1 - sigma) * (1 - (1 - sigma) * t)) / var * (x - t * m)

    return field


def standardised_stats(x):
    u = (x - M) / S
    return float(u.mean()), float(u.var())


def run_score(name, n_steps, z, seed=1):
    mu = MU.expand_as(z)
    return SAMPLERS[name].fn(score_field(), z, MASK, mu, n_steps, VP,
                             NoiseSource(generator=torch.Generator().manual_seed(seed)))


def exact_pf_ode(z, t_end):
    """Exact probability-flow solution from t = 1 to t_end for the Gaussian data above."""

    def moments(t):
        a = math.exp(-0.5 * VP.cum_beta(t))
        return a * M + (1 - a) * MU, torch.sqrt(a * a * S**2 + 1 - a * a)

    m1, s1 = moments(1.0)
    me, se = moments(t_end)
    return me + se / s1 * (z - m1)


@pytest.fixture(scope="module")
def score_start():
    return MU + torch.randn(N_SAMPLES, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def flow_start():
    return torch.randn(N_SAMPLES, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


# steps where each sampler's discretisation bias is well inside the tolerances (ml shrinks the variance by
# O(h): it plugs the posterior mean of x_0 in as if it were certain, exact only for point-mass data)
@pytest.mark.parametrize("name,n_steps", [("ml", 1000), ("euler_sde", 100), ("euler_ode", 100), ("dpm1", 200),
                                          ("dpm2", 20), ("dpm3", 20)])
def test_score_samplers_reach_the_data_distribution(name, n_steps, score_start):
    mean, var = standardised_stats(run_score(name, n_steps, score_start))
    assert abs(mean) < MEAN_TOL, f"{name}: standardised mean {mean:.4f}"
    assert abs(var - 1) < VAR_TOL, f"{name}: standardised variance {var:.4f}"


@pytest.mark.parametrize("sigma", [1e-4, 0.0], ids=["cfm", "rectified"])
@pytest.mark.parametrize("name,n_steps", [("euler", 100), ("heun", 10)])
def test_flow_samplers_reach_the_data_distribution(name, n_steps, sigma, flow_start):
    x = SAMPLERS[name].fn(flow_field(sigma), flow_start, MASK, MU, n_steps, FlowPath(sigma), NoiseSource())
    mean, var = standardised_stats(x)
    assert abs(mean) < MEAN_TOL, f"{name}: standardised mean {mean:.4f}"
    assert abs(var - 1) < VAR_TOL, f"{name}: standardised variance {var:.4f}"


def test_ml_is_exact_for_point_mass_data_at_few_steps():
    """With data = m exactly (s = 0) the maximum-likelihood solver lands on m for any step count (Diff-VC)."""
    z = MU + torch.randn(64, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    field = score_field(s=torch.zeros_like(S))
    for n in (3, 10):
        x = ml(field, z, MASK, MU.expand_as(z), n, VP, NoiseSource(generator=torch.Generator().manual_seed(4)))
        assert float((x - M).abs().max()) < 1e-6, n


def test_score_ode_samplers_converge_with_their_order():
    z = MU + torch.randn(64, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def err(name, n):
        exact = exact_pf_ode(z, 0.0 if name == "euler_ode" else DPM_T_END)
        return float((run_score(name, n, z) - exact).abs().max())

    assert err("euler_ode", 1000) < 0.01  # the reference: a 1000-step Euler solution agrees with the exact one
    e10 = {name: err(name, 10) for name in ("euler_ode", "dpm1", "dpm2", "dpm3")}
    assert e10["dpm2"] < 0.7 * e10["euler_ode"] and e10["dpm3"] < 0.5 * e10["euler_ode"], e10
    assert e10["dpm3"] < e10["dpm2"] < e10["dpm1"], e10
    # observed order between 20 and 40 steps: about 1 for Euler and DPM-Solver-1, 2 for DPM-Solver-2, and above 2
    # for DPM-Solver-3 (its first-order warm-up step keeps the global order at 2 asymptotically)
    order = {name: math.log2(err(name, 20) / err(name, 40)) for name in ("euler_ode", "dpm1", "dpm2", "dpm3")}
    assert 0.8 < order["euler_ode"] < 1.4 and 0.8 < order["dpm1"] < 1.3, order
    assert 1.7 < order["dpm2"] < 2.3 and 2.0 < order["dpm3"] < 3.2, order


@pytest.mark.parametrize("sigma", [1e-4, 0.0], ids=["cfm", "rectified"])
def test_heun_beats_euler_at_the_same_number_of_estimator_calls(sigma):
    z = torch.randn(64, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    exact = M + torch.sqrt(sigma**2 + S**2) * z

    def err(name, n):
        x = SAMPLERS[name].fn(flow_field(sigma), z, MASK, MU, n, FlowPath(sigma), NoiseSource())
        return float((x - exact).abs().max())

    assert err("heun", 5) < 0.1 * err("euler", 10)  # both 10 estimator calls
    assert 1.7 < math.log2(err("heun", 10) / err("heun", 20)) < 2.3
    assert 0.8 < math.log2(err("euler", 10) / err("euler", 20)) < 1.2


def test_ml_batch_equals_items_alone():
    """The original V2 solver's batch failure fixed (docs/conventions.md#v2-sampler-and-batches): a batch of 3
    gives each item's batch-1 result (same noise)."""
    b = 3
    m = M + torch.arange(b, dtype=torch.float64).view(b, 1, 1)
    mu = m + 0.5
    field = score_field(m=m, mu=mu)
    z = mu + torch.randn(b, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    noises = list(torch.randn(8, b, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(8)))
    mask = MASK.expand(b, 1, T)
    batch = ml(field, z, mask, mu, 8, VP, NoiseSource(noises))
    for i in range(b):
        alone = ml(score_field(m=m[i:i + 1], mu=mu[i:i + 1]), z[i:i + 1], MASK, mu[i:i + 1], 8, VP,
                   NoiseSource([n[i:i + 1] for n in noises]))
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=0, atol=1e-12)


def test_masked_frames_stay_zero_for_score_samplers():
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]], dtype=torch.float64)
    z = MU + torch.randn(5, F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    for name in ("ml", "euler_sde", "euler_ode", "dpm1", "dpm2", "dpm3"):
        x = SAMPLERS[name].fn(score_field(), z, mask, MU * mask, 6, VP,
                              NoiseSource(generator=torch.Generator().manual_seed(1)))
        assert torch.all(x[..., 3] == 0), name


def test_noise_source_order_shapes_and_reproducibility():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    src = NoiseSource([a, b])
    like = torch.empty(0, dtype=torch.float64)
    assert torch.equal(src.randn((2, 3), like), a.double()) and src.remaining == 1
    with pytest.raises(ValueError, match="shape"):
        src.randn((3, 2), like)
    assert torch.equal(src.randn((2, 3), like), b.double())
    with pytest.raises(ValueError, match="only 2"):
        src.randn((2, 3), like)
    g1 = NoiseSource(generator=torch.Generator().manual_seed(11)).randn((4, 5), like)
    g2 = as_noise_source(None, torch.Generator().manual_seed(11)).randn((4, 5), like)
    assert torch.equal(g1, g2) and g1.dtype == torch.float64


def test_sampler_names_and_kinds():
    assert {n for n, s in SAMPLERS.items() if s.kind == "score"} == {"ml", "euler_sde", "euler_ode", "dpm1", "dpm2",
                                                                      "dpm3"}
    assert {n for n, s in SAMPLERS.items() if s.kind == "flow"} == {"euler", "heun"}
    assert get_sampler("heun", "flow") is SAMPLERS["heun"].fn
    with pytest.raises(ValueError, match="not available for the flow decoder"):
        get_sampler("ml", "flow")
    with pytest.raises(ValueError, match="choose one of"):
        get_sampler("nope", "score")


def test_vp_schedule_log_snr_inverse():
    for t in (1e-3, 0.1, 0.5, 1.0):
        assert abs(VP.t_of_lam(VP.lam(t)) - t) < 1e-9
