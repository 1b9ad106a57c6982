"""Duo's Gaussian-to-discrete map and Gumbel-softmax curriculum (nanodllm/curriculum.py, spec §3.5, §10 C4).

Run: python -m pytest -q tests/test_curriculum.py      # a few seconds
"""
import math

import pytest
import torch

from helpers import make_model
from nanodllm import curriculum, duo, memory, noise
from nanodllm.config import ModelConfig


def monte_carlo_I(gamma, V, n=100_000, seed=0):
    """P(argmax(nu e_x + xi) = x) by sampling, nu = e^(-gamma/2), independent of the quadrature -> its estimate."""
    g = torch.Generator().manual_seed(seed)
    xi = torch.randn(n, V, generator=g, dtype=torch.float64)
    xi[:, 0] += math.exp(-gamma / 2)
    return (xi.argmax(-1) == 0).double().mean().item()


@pytest.mark.parametrize('V', [3, 10, 50])
@pytest.mark.parametrize('gamma', [-4.0, -2.0, -1.0, 1.0])
def test_integral_matches_monte_carlo(V, gamma):
    I = curriculum.integral(torch.tensor(gamma), V)[0].item()
    n = 100_000
    se = math.sqrt(I * (1 - I) / n)                                    # the standard error of the estimate
    assert abs(I - monte_carlo_I(gamma, V, n)) <= 4 * se + 2 / n, (V, gamma, I, se)


def test_integral_and_operator_match_the_spec_values():
    """spec §10 C4: V = 10: I(-3) = 0.9941, I(-1) = 0.5594, I(1) = 0.2261; T at the authors' gamma ranges."""
    I, _ = curriculum.integral(torch.tensor([-3.0, -1.0, 1.0]), 10)
    assert torch.allclose(I, torch.tensor([0.9941, 0.5594, 0.2261], dtype=torch.float64), atol=6e-5)
    for V, gammas, want in [(50257, [-3.55, -1.85, -4.0, -1.0], [0.94547, 0.04932, 0.99869, 0.00619]),
                            (32001, [-3.5, -1.75], [0.94052, 0.04760])]:
        T = curriculum.transform(curriculum.integral(torch.tensor(gammas), V)[0], V)
        assert torch.allclose(T, torch.tensor(want, dtype=torch.float64), atol=6e-6), (V, T)


def test_operator_is_monotone_and_reaches_1_and_0_at_the_ends():
    V = 257
    grid, I, dI = curriculum.table(V, -12.0, 6.0, n=2001)
    T = curriculum.transform(I, V)
    assert (T[1:] <= T[:-1]).all() and (dI <= 1e-12).all()           # decreasing in gamma: more noise, lower alpha
    inside = (grid > -4.5) & (grid < 6)                                # strictly, where float64 can tell
    assert (T[1:][inside[1:]] < T[:-1][inside[1:]]).all() and (dI[inside] < 0).all()
    assert T[0] > 1 - 1e-9 and T[-1] < 1e-3                           # SNR e^12: clean; SNR e^-6: ~ uniform
    # the curriculum's range keeps alpha inside (0, 1), away from both ends
    _, alpha, dalpha, sigma = curriculum.schedule(torch.tensor([0.0, 1.0]), V)
    assert 0.5 < alpha[0] < 1 and 0 < alpha[1] < 0.5 and (dalpha < 0).all() and (sigma > 0).all()


def test_lookup_between_grid_points_equals_direct_quadrature():
    V, lo, hi = 257, -3.5, -1.75
    tab = curriculum.table(V, lo, hi)
    grid = tab[0]
    mid = (grid[:-1] + grid[1:])[::997] / 2                            # half-way between grid points
    I, dI = curriculum.lookup(tab, mid)
    I_direct, dI_direct = curriculum.integral(mid, V)
    assert torch.allclose(I, I_direct, atol=1e-8) and torch.allclose(dI, dI_direct, rtol=1e-6, atol=1e-8)
    # clipping: outside the range the ends are returned
    I_out, _ = curriculum.lookup(tab, torch.tensor([lo - 1, hi + 1]))
    assert torch.allclose(I_out, torch.stack([tab[1][0], tab[1][-1]]))
    # the exact derivative agrees with the authors' forward difference (gamma_max - gamma_min) 1000 (T(g+1e-3) - T(g))
    t = torch.tensor([0.1, 0.5, 0.9])
    gamma, _, dalpha, _ = curriculum.schedule(t, V)
    forward = (hi - lo) * 1000 * (curriculum.transform(curriculum.integral(gamma + 1e-3, V)[0], V)
                                  - curriculum.transform(curriculum.integral(gamma, V)[0], V))
    assert torch.allclose(dalpha, forward, rtol=5e-3)


def test_spec_derivative_at_t_half():
    """spec §10 C4: V = 50257, gamma in [-3.55, -1.85]: dalpha/dt at t = 0.5 is about -1.184."""
    _, _, dalpha, _ = curriculum.schedule(torch.tensor([0.5]), 50257, (-3.55, -1.85))
    assert abs(dalpha.item() + 1.184) < 2e-3


def test_argmax_of_the_latent_is_duo_noise_with_alpha_T():
    """The empirical P(argmax w = x0) equals T + (1 - T) / V (spec §10 C4), and the wrong ids are uniform."""
    V, n = 11, 40_000
    torch.manual_seed(0)
    x0 = torch.randint(0, V, (n, 1))
    gamma = torch.full((n,), -2.0, dtype=torch.float64)
    z = curriculum.latent(x0, gamma, V).argmax(-1)                    # (n, 1)
    alpha = curriculum.transform(curriculum.integral(torch.tensor(-2.0), V)[0], V).item()
    want = alpha + (1 - alpha) / V
    rate = (z == x0).double().mean().item()
    assert abs(rate - want) < 4 * math.sqrt(want * (1 - want) / n)
    offset = (z - x0) % V                                              # the wrong ids: uniform over the V - 1 others
    counts = torch.bincount(offset[offset > 0], minlength=V)[1:].double()
    assert (counts / counts.mean() - 1).abs().max() < 0.15


def test_soft_input_at_tau_to_0_is_the_hard_one_hot_embedding():
    model = make_model(vocab_size=11)
    torch.manual_seed(1)
    x0 = torch.randint(0, 10, (3, 16))
    w = curriculum.latent(x0, torch.tensor([-3.0, -2.0, -1.0], dtype=torch.float64), 11)
    sigma = torch.rand(3)
    soft = (w * curriculum.tau_inverse(10, 0, 10)).softmax(-1)          # step >= end: 1/tau = 1e10
    hard = torch.nn.functional.one_hot(w.argmax(-1), 11).float()
    assert torch.equal(soft, hard)
    assert torch.allclose(model(soft, sigma=sigma), model(w.argmax(-1), sigma=sigma), atol=1e-5)
    # a warm tau gives a different input (the test can fail)
    assert not torch.allclose(model((w * 10).softmax(-1), sigma=sigma), model(w.argmax(-1), sigma=sigma), atol=1e-3)


def test_one_hot_probability_input_gives_the_token_logits():
    model = make_model(vocab_size=11)
    x = torch.randint(0, 11, (2, 16))
    sigma = torch.rand(2)
    one_hot = torch.nn.functional.one_hot(x, 11).float()
    assert torch.allclose(model(one_hot, sigma=sigma), model(x, sigma=sigma), atol=1e-5)
    assert torch.allclose(model(one_hot, attn='causal'), model(x, attn='causal'), atol=1e-5)


def test_curriculum_loss_is_the_duo_nelbo_when_the_latent_is_forced():
    """A latent whose argmax is duo.corrupt's z, at tau -> 0, with the same alpha: the same value as the discrete
    NELBO; and curriculum.loss uses the t of duo.loss (same generator draws) mapped through T."""
    V = 11
    model = make_model(vocab_size=V)
    torch.manual_seed(2)
    x0 = torch.randint(0, V - 1, (4, 16))
    t = noise.sample_t(4, generator=torch.Generator().manual_seed(5))
    _, alpha_t, dalpha_t, sigma_t = curriculum.schedule(t, V)
    z = duo.corrupt(x0, alpha_t[:, None].float(), V)
    w = torch.randn(4, 16, V) + 20 * torch.nn.functional.one_hot(z, V)  # argmax(w) = z
    got = curriculum.nelbo_of_latent(model, x0, w, 1e10, alpha_t, dalpha_t, sigma_t)
    want = duo.nelbo_per_token(model(z, sigma=sigma_t, attn='full'), x0, z, alpha_t[:, None].float(),
                               dalpha_t[:, None].float())
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    # end to end: same t stream as duo.loss, a finite positive loss, and gradients reach the embedding
    model.train()
    nll, n = curriculum.loss(model, x0, generator=torch.Generator().manual_seed(5), tau_inv=10.0)
    nll.backward()
    assert n == 64 and torch.isfinite(nll) and nll > 0 and model.wte.weight.grad.abs().sum() > 0


def test_matched_gamma_range_gives_the_authors_alpha_range_to_any_vocabulary():
    assert curriculum.matched_gamma_range(50258) == curriculum.GAMMA_RANGE             # GPT-2's: theirs
    for V, authors in [(257, curriculum.GAMMA_RANGE), (257, (-4.0, -1.0)), (11, curriculum.GAMMA_RANGE)]:
        mine = curriculum.matched_gamma_range(V, authors)
        alpha = lambda g, v: curriculum.transform(curriculum.integral(torch.tensor(g), v)[0], v)
        assert torch.allclose(alpha(mine, V), alpha(authors, 50258), atol=1e-5), (V, mine)
    lo, hi = curriculum.matched_gamma_range(257)
    assert lo > curriculum.GAMMA_RANGE[0] and hi > curriculum.GAMMA_RANGE[1]  # fewer ids: more noise for one alpha
    assert curriculum.Curriculum(100, 257).gamma_range == (lo, hi)
    assert curriculum.Curriculum(100, 257, gamma_range=(-3, -2)).gamma_range == (-3, -2)


def test_tau_schedule_values():
    start, end = 100, 200
    assert curriculum.tau_inverse(0, start, end) == pytest.approx(10.0)          # log10 tau = -1 before start
    assert curriculum.tau_inverse(99, start, end) == pytest.approx(10.0)
    assert curriculum.tau_inverse(100, start, end) == pytest.approx(10.0)
    assert curriculum.tau_inverse(150, start, end) == pytest.approx(10 ** 1.5)   # half-way: log10 tau = -1.5
    assert curriculum.tau_inverse(199, start, end) == pytest.approx(10 ** 1.99)
    assert curriculum.tau_inverse(200, start, end) == pytest.approx(1e10)        # step == end: one-hot
    c = curriculum.Curriculum(1000, 257)                                          # the authors' 10%, 20%
    assert (c.start, c.end) == (100, 200)
    assert c.loss_at(200).keywords['tau_inv'] == pytest.approx(1e10) and c.loss_at(201) is duo.loss


def test_memory_plan_counts_the_latent_and_refuses_what_does_not_fit():
    cfg = ModelConfig(vocab_size=50258, n_layer=2, n_head=2, n_embd=64, seq_len=128)
    kw = dict(family='duo', micro_batch_size=8, dtype='float32')
    plain, cur = memory.plan(cfg, **kw), memory.plan(cfg, curriculum=True, **kw)
    assert cur['activations'] - plain['activations'] == 8 * 128 * 50258 * 4      # the B x L x V soft input
    gpu = (plain['total'] + cur['total']) / 2 * (1 + memory.FRAGMENTATION) + memory.CUDA_RESERVED
    assert memory.fit_warning(cfg, gpu, 8, family='duo', dtype='float32') is None
    assert 'micro-batch' in memory.fit_warning(cfg, gpu, 8, family='duo', dtype='float32', curriculum=True)


def test_memory_plan_matches_what_the_curriculum_saves():
    """The measured saved tensors of the curriculum loss exceed the plain Duo loss's by the soft input."""
    V, B, L = 257, 4, 32
    model = make_model(vocab_size=V, seq_len=L).train()
    x0 = torch.randint(0, V - 1, (B, L))
    params = list(model.parameters())
    _, plain = memory.saved_tensor_bytes(lambda: duo.loss(model, x0), exclude=params)
    _, cur = memory.saved_tensor_bytes(lambda: curriculum.loss(model, x0, tau_inv=10.0), exclude=params)
    assert abs((cur - plain) - B * L * V * 4) < 0.05 * B * L * V * 4, (cur - plain, B * L * V * 4)
