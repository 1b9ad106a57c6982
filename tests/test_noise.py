"""Tests of the shared noise helpers (nanodllm/noise.py, spec §0.2-0.5, §10 C5).

Run: cd /work/main && python -m pytest -q tests/test_noise.py
"""
import pytest
import torch

from nanodllm import noise


@pytest.mark.parametrize('alpha0', [1.0, 0.5, 0.125])
def test_schedule_endpoints_and_derivative(alpha0):
    assert noise.alpha(0.0, alpha0) == alpha0
    assert noise.alpha(1.0, alpha0) == pytest.approx(alpha0 * noise.EPS, rel=1e-12)
    t = torch.tensor([0.001, 0.1, 0.37, 0.5, 0.9, 0.999], dtype=torch.float64)
    d = noise.dalpha(t, alpha0)
    assert d.shape == t.shape and (d < 0).all()
    assert torch.equal(d, torch.full_like(t, d[0].item()))                         # constant in t
    h = 1e-6
    fd = (noise.alpha(t + h, alpha0) - noise.alpha(t - h, alpha0)) / (2 * h)       # central finite difference
    torch.testing.assert_close(d, fd, rtol=1e-7, atol=0)
    assert noise.dalpha(0.3, alpha0) == pytest.approx(-alpha0 * (1 - noise.EPS), rel=1e-12)   # scalar input too


def _strata(t, N):
    """Index of the stratum [eps + (1-eps) i/N, eps + (1-eps)(i+1)/N) of each t."""
    return ((t.double() - noise.T_MIN) / (1 - noise.T_MIN) * N).floor().long()


def test_antithetic_one_process_equals_ranks_times_micro_steps():
    seed, N = 1234, 8
    t_one = noise.sample_t(8, 0, 1, torch.Generator().manual_seed(seed))           # (8,) one process, one step
    # 2 ranks x 2 micro-steps of 2 rows each: slice k = rank * 2 + micro of K = 4, each from the same seed
    t_split = torch.cat([noise.sample_t(2, rank * 2 + micro, 4, torch.Generator().manual_seed(seed))
                         for rank in range(2) for micro in range(2)])
    assert torch.equal(t_one, t_split)                                             # the same values, in order
    for t in (t_one, t_split):
        assert torch.equal(_strata(t, N).sort().values, torch.arange(N))            # exactly one per stratum
        assert (t >= noise.T_MIN).all() and (t <= 1).all()


def test_antithetic_covers_every_stratum_with_an_advancing_generator():
    # a generator that is NOT reseeded between slices gives different values, but the slices still tile the strata
    g = torch.Generator().manual_seed(7)
    N, K = 32, 4
    t = torch.cat([noise.sample_t(N // K, k, K, g) for k in range(K)])
    assert torch.equal(_strata(t, N), torch.arange(N))


def test_sample_t_is_uniform_on_its_range():
    t = torch.cat([noise.sample_t(64, 0, 1, torch.Generator().manual_seed(s)) for s in range(50)]).double()
    assert abs(t.mean().item() - (1 + noise.T_MIN) / 2) < 2e-3                    # E[t] for t ~ U[1e-3, 1]
    assert abs(t.var().item() - (1 - noise.T_MIN) ** 2 / 12) < 3e-3


def _row_draws(rows):
    return noise.sample_t(len(rows), generator=rows), noise.uniform((len(rows), 5), 'cpu', rows), \
        noise.randint(9, (len(rows), 5), 'cpu', rows)


def test_row_noise_gives_each_validation_sequence_its_own_stream():
    """Sequence j draws the same t, uniforms and integers whatever batch it is in (evaluation, noise.RowNoise)."""
    full = _row_draws(noise.RowNoise(range(6), 6, seed=3))
    for index in ([3, 4, 5], [0, 1, 2], [5], [4, 1]):
        for part, whole in zip(_row_draws(noise.RowNoise(index, 6, seed=3)), full):
            assert torch.equal(part, whole[index])
    sliced = noise.RowNoise(range(6), 6, seed=3)[2:4] + noise.RowNoise([5], 6, seed=3)   # slicing and + keep streams
    for part, whole in zip(_row_draws(sliced), full):
        assert torch.equal(part, whole[[2, 3, 5]])
    assert torch.equal(_strata(full[0], 6).sort().values, torch.arange(6))  # one t per stratum of the whole set
    other = _row_draws(noise.RowNoise(range(6), 6, seed=4))
    assert not torch.equal(other[1], full[1])
    with pytest.raises(ValueError, match='row indices'):
        noise.RowNoise([6], 6, seed=3)


def test_training_draws_come_from_the_global_stream():
    """A torch.Generator (the t stream shared by all ranks) is not used for masks: they come from the global RNG,
    exactly as torch.rand / torch.randint would draw them (training is unchanged by RowNoise)."""
    g = torch.Generator().manual_seed(9)
    torch.manual_seed(0)
    u, r = noise.uniform((3, 4), 'cpu', g), noise.randint(7, (3, 4), 'cpu', g)
    torch.manual_seed(0)
    assert torch.equal(u, torch.rand(3, 4)) and torch.equal(r, torch.randint(0, 7, (3, 4)))
    assert noise.split_rows(g, 2) == (g, None)


@pytest.mark.parametrize('steps', [1, 7, 128])
def test_sampling_grid(steps):
    g = noise.sampling_grid(steps)
    assert g.dtype == torch.float64 and g.shape == (steps + 1,)
    assert g[0] == 1.0 and g[-1] == pytest.approx(noise.T_END, rel=1e-12)
    assert (g[1:] < g[:-1]).all()
    torch.testing.assert_close(g[:-1] - g[1:], torch.full((steps,), (1 - noise.T_END) / steps, dtype=torch.float64))


@pytest.mark.parametrize('p', [
    [0.1, 0.2, 0.3, 0.4],
    [3.7 * 0.1, 3.7 * 0.2, 3.7 * 0.3, 3.7 * 0.4],            # unnormalised
    [0.5, 0.0, 0.25, 0.0, 0.25],                              # zeros must never be picked
])
def test_sample_categorical_frequencies(p):
    p = torch.tensor(p, dtype=torch.float64)
    n = 50_000
    draws = noise.sample_categorical(p.expand(n, -1), torch.Generator().manual_seed(0))
    assert draws.shape == (n,)
    freq = torch.bincount(draws, minlength=len(p)).double() / n
    torch.testing.assert_close(freq, p / p.sum(), atol=1e-2, rtol=0)               # std of a frequency <= 0.0023
    assert (freq[p == 0] == 0).all()


def test_sample_categorical_one_hot_is_deterministic():
    p = torch.zeros(1000, 6, dtype=torch.float64)
    idx = torch.randint(0, 6, (1000,), generator=torch.Generator().manual_seed(1))
    p[torch.arange(1000), idx] = 1.0
    assert torch.equal(noise.sample_categorical(p, torch.Generator().manual_seed(2)), idx)


def test_top_p_filter_keeps_the_expected_set():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3], dtype=torch.float64)              # ranked: 1, 3, 2, 0
    logits = probs.log()
    for top_p, kept in [(0.3, {1}), (0.7, {1, 3}), (0.85, {1, 3, 2}), (0.97, {0, 1, 2, 3}), (0.0, {1})]:
        out = noise.top_p_filter(logits, top_p)
        keep = set(torch.nonzero(out > float('-inf')).flatten().tolist())
        assert keep == kept, (top_p, keep)
        assert torch.equal(out[list(kept)], logits[list(kept)])                    # kept logits are untouched
    assert torch.equal(noise.top_p_filter(logits, 1.0), logits)


def test_top_p_filter_always_keeps_the_top1_in_a_batch():
    logits = torch.randn(64, 9, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    for top_p in (0.0, 1e-6, 0.2, 0.9):
        out = noise.top_p_filter(logits, top_p)
        top1 = logits.argmax(-1, keepdim=True)
        assert torch.equal(out.gather(-1, top1), logits.gather(-1, top1))
        # the kept set is exactly {j: mass of the tokens ranked above j <= top_p} (brute force)
        p = logits.softmax(-1)
        mass_above = (p[..., None, :] * (p[..., None, :] > p[..., :, None])).sum(-1)   # (64, 9, 7)
        assert torch.equal(out > float('-inf'), (mass_above <= top_p) | (logits == logits.max(-1, keepdim=True).values))


def test_probs_from_logits_keeps_the_mask_at_zero():
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(4))
    logits[:, -1] = -1e6                                                            # the backbone's mask logit
    for temperature, top_p in [(1.0, 1.0), (0.5, 0.9), (2.0, 1.0)]:
        p = noise.probs_from_logits(logits, temperature, top_p)
        assert p.dtype == torch.float64 and (p[:, -1] == 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(noise.probs_from_logits(logits, 2.0), (logits.double() / 2).softmax(-1))
