"""Tests of the MDLM family (nanodllm/mdlm.py, spec §2, §7.1, §9, §10 C1).

Run: cd /work/main && python -m pytest -q tests/test_mdlm.py
"""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_model

from nanodllm import mdlm, noise

V, L = 11, 16
MASK = V - 1


class Recorder(torch.nn.Module):
    """Wraps a model: keeps every network input (so tests see xt and count calls) and can edit the logits."""

    def __init__(self, model, edit=None):
        super().__init__()
        self.model, self.cfg, self.edit, self.inputs = model, model.cfg, edit, []

    def forward(self, idx, sigma=None, attn='full'):
        self.inputs.append(idx.clone())
        logits = self.model(idx, sigma=sigma, attn=attn)
        return logits if self.edit is None else self.edit(idx, logits)


class Oracle(torch.nn.Module):
    """A perfect denoiser for a fixed x0 (B, L): logit 30 on the clean token, 0 elsewhere, -1e6 on the mask."""

    def __init__(self, x0):
        super().__init__()
        self.x0, self.cfg = x0, make_model(vocab_size=V, seq_len=L).cfg
        self.dummy = torch.nn.Parameter(torch.zeros(1))                            # gives the sampler a device

    def forward(self, idx, sigma=None, attn='full'):
        logits = 30.0 * F.one_hot(self.x0, V).float()                               # (B, L, V)
        logits[..., MASK] = -1e6
        return logits


def random_x0(B, seed=0):
    return torch.randint(0, V - 1, (B, L), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# (1) the zero-initialised (uniform) model: closed forms (spec §10 C1 b)

def test_uniform_model_closed_forms():
    """Derivation. At init the head is zero, so the logits are 0 on the V-1 real tokens and -1e6 on the mask: the
    model is uniform over the real tokens and l_i = -log p(x0_i) = log(V-1) at every masked position, whatever xt.
    Given t, each position is masked independently with probability 1 - alpha_t = (1 - eps) t.
    - low-var: E[l_i | t] = log(V-1) (1-eps) t, so with t ~ U[1e-3, 1]: E = log(V-1) (1-eps) (1 + 1e-3) / 2.
    - NELBO: the weight is -alpha'_t / (1 - alpha_t) = (1-eps) / ((1-eps) t) = 1/t, so
      E[l_i / t | t] = log(V-1) (1-eps) t / t = (1-eps) log(V-1) for EVERY t.
    The only randomness left given t is which positions are masked: with M_b masked positions in sequence b, its
    NELBO sum is exactly log(V-1) M_b / t_b (checked per sequence, no averaging), and its low-var sum is
    log(V-1) M_b. M_b ~ Binomial(L, (1-eps) t_b) then gives the expectations above (checked within 5 sigma).
    """
    model = make_model(vocab_size=V, seq_len=L, randomize=False)
    logV = math.log(V - 1)

    # exact, per sequence, given t and the masks (nll_per_token with a known t)
    B = 64
    x0 = random_x0(B)
    t = noise.sample_t(B, generator=torch.Generator().manual_seed(1))
    for elbo in (True, False):
        nll, xt = mdlm.nll_per_token(model, x0, t, elbo=elbo)                        # (B, L)
        M = (xt == MASK).sum(1).double()                                             # (B,)
        expected = logV * M / (t.double() if elbo else 1.0)
        torch.testing.assert_close(nll.sum(1).double(), expected, rtol=1e-5, atol=1e-5)

    # the same through loss(): t comes from slice k=1 of K=4 of the stratified global batch
    rec = Recorder(model)
    total, n_tokens = mdlm.loss(rec, x0, train=False, strata=(1, 4), generator=torch.Generator().manual_seed(5))
    assert n_tokens == B * L                                                         # all tokens, not masked ones
    t = noise.sample_t(B, 1, 4, torch.Generator().manual_seed(5)).double()
    M = (rec.inputs[0] == MASK).sum(1).double()
    assert total.item() == pytest.approx((logV * M / t).sum().item(), rel=1e-5)

    # NELBO expectation (1-eps) log(V-1), the same at every t
    B = 1024
    x0 = random_x0(B, seed=2)
    for t_val in (0.05, 0.3, 0.9):
        nll, _ = mdlm.nll_per_token(model, x0, torch.full((B,), t_val), elbo=True)
        p = (1 - noise.EPS) * t_val
        sigma = logV / t_val * math.sqrt(p * (1 - p) / (B * L))
        assert abs(nll.mean().item() - (1 - noise.EPS) * logV) < 5 * sigma, t_val

    # low-var expectation log(V-1) (1-eps) E[t] through loss() with the antithetic t
    total, n_tokens = mdlm.loss(model, x0, train=True, generator=torch.Generator().manual_seed(3))
    sigma = logV * math.sqrt(0.25 / n_tokens)
    assert abs(total.item() / n_tokens - logV * (1 - noise.EPS) * (1 + noise.T_MIN) / 2) < 5 * sigma


# ----------------------------------------------------------------------------------------------------------------
# (2) low-var vs NELBO, carry-over

def test_low_var_is_nelbo_without_the_weight():
    model = make_model(vocab_size=V, seq_len=L)
    x0 = random_x0(32)
    t = noise.sample_t(32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    low_var, xt = mdlm.nll_per_token(model, x0, t, elbo=False)
    torch.manual_seed(7)
    nelbo, xt2 = mdlm.nll_per_token(model, x0, t, elbo=True)
    assert torch.equal(xt, xt2)                                                      # identical masks
    masked = xt == MASK
    assert masked.any() and (~masked).any()
    assert (low_var[~masked] == 0).all() and (nelbo[~masked] == 0).all()
    t_full = t[:, None].expand_as(xt)
    torch.testing.assert_close(nelbo[masked], low_var[masked] / t_full[masked], rtol=1e-6, atol=0)
    # the per-token loss at a masked position is -log softmax(logits)[x0], computed independently here
    ref = -torch.log_softmax(model(xt).double(), -1).gather(-1, x0[..., None])[..., 0]
    torch.testing.assert_close(low_var[masked].double(), ref[masked], rtol=1e-5, atol=1e-6)
    assert (low_var[masked] > 0).all()


def test_loss_type_and_eval_switch():
    model = make_model(vocab_size=V, seq_len=L)
    x0 = random_x0(16)

    def run(**kw):
        torch.manual_seed(11)
        return mdlm.loss(model, x0, generator=torch.Generator().manual_seed(4), **kw)[0]

    nelbo = run(train=False)
    assert torch.equal(run(train=False, loss_type='low_var'), nelbo)                 # eval is always the NELBO
    assert torch.equal(run(train=True, loss_type='elbo'), nelbo)
    low_var = run(train=True, loss_type='low_var')
    assert low_var.requires_grad and low_var.item() < nelbo.item()                   # 1/t >= 1 on every token


def test_carry_over_unmasked_predictions_do_not_matter():
    model = make_model(vocab_size=V, seq_len=L)
    x0 = random_x0(16)
    noise_logits = 5 * torch.randn(16, L, V, generator=torch.Generator().manual_seed(9))

    def edit_where(which):
        def edit(idx, logits):
            hit = (idx == MASK) if which == 'masked' else (idx != MASK)
            return logits + noise_logits * hit[..., None]
        return edit

    def run(m):
        torch.manual_seed(3)
        return mdlm.loss(m, x0, train=False, generator=torch.Generator().manual_seed(2))[0]

    base = run(model)
    assert torch.equal(run(Recorder(model, edit_where('unmasked'))), base)           # exactly unchanged
    assert not torch.allclose(run(Recorder(model, edit_where('masked'))), base)      # masked ones do matter


# ----------------------------------------------------------------------------------------------------------------
# (3) a perfect denoiser: zero loss, and the sampler returns x0

def test_perfect_model_has_zero_loss_and_samples_x0():
    x0 = random_x0(8)
    oracle = Oracle(x0)
    for train, loss_type in [(True, 'low_var'), (True, 'elbo'), (False, 'low_var')]:
        total, n_tokens = mdlm.loss(oracle, x0, train=train, loss_type=loss_type,
                                    generator=torch.Generator().manual_seed(0))
        assert 0 <= total.item() / n_tokens < 1e-6
    for steps in (1, 5, L):
        for noise_removal in ('ancestral', 'greedy'):
            x, _ = mdlm.sample(oracle, 8, L, steps=steps, noise_removal=noise_removal,
                               generator=torch.Generator().manual_seed(steps))
            assert torch.equal(x, x0)


# ----------------------------------------------------------------------------------------------------------------
# (4) samplers: no mask in the output, decoded and prompt tokens never change

@pytest.mark.parametrize('noise_removal', ['ancestral', 'greedy'])
@pytest.mark.parametrize('steps,temperature,top_p,use_cache', [(4, 1.0, 1.0, True), (16, 0.8, 0.9, False),
                                                               (40, 1.0, 1.0, True)])
def test_sampler_never_emits_mask_and_never_changes_decoded_tokens(noise_removal, steps, temperature, top_p,
                                                                   use_cache):
    model = Recorder(make_model(vocab_size=V, seq_len=L))
    prompt = torch.tensor([3, 1, 4])
    states = []
    x, nfe = mdlm.sample(model, 6, L, steps=steps, prompt=prompt, temperature=temperature, top_p=top_p,
                         generator=torch.Generator().manual_seed(0), callback=lambda s: states.append(s.clone()),
                         noise_removal=noise_removal, use_cache=use_cache)
    assert x.shape == (6, L) and x.dtype == torch.long
    assert len(states) == steps + 1 and torch.equal(states[-1], x)
    assert not (x == MASK).any() and ((x >= 0) & (x < V - 1)).all()
    assert nfe == len(model.inputs)                                                  # honest NFE count
    prev = torch.full_like(x, MASK)
    for s in states:
        assert torch.equal(s[:, :3], prompt.expand(6, 3))                           # the prompt stays
        decoded = prev != MASK
        assert torch.equal(s[decoded], prev[decoded])                                # once decoded, constant
        prev = s
    if noise_removal == 'greedy':
        # greedy fills only the still-masked positions, with the argmax of the last network call
        last = model.inputs[-1]
        assert torch.equal(last, states[-2])
        expected = torch.where(last == MASK, model.model(last).argmax(-1), last)
        assert torch.equal(x, expected)


def test_noise_removal_none_is_the_state_before_removal():
    model = make_model(vocab_size=V, seq_len=L)
    states = []
    mdlm.sample(model, 4, L, steps=3, generator=torch.Generator().manual_seed(1),
                callback=lambda s: states.append(s.clone()), use_cache=False)
    x, nfe = mdlm.sample(model, 4, L, steps=3, generator=torch.Generator().manual_seed(1), noise_removal='none',
                         use_cache=False)
    assert torch.equal(x, states[-2]) and nfe == 3                                 # the same draws, one call less


def test_first_step_follows_the_posterior():
    """From all masks (t = 1) to s = tau_1: a position unmasks with probability (alpha_s - alpha_t) / (1 - alpha_t)
    and, if it does, takes token j with probability p_j (temperature and top-p applied to the logits)."""
    model = make_model(vocab_size=V, seq_len=8)
    n, length, steps, temperature, top_p = 8000, 8, 2, 0.7, 0.8
    states = []
    mdlm.sample(model, n, length, steps=steps, temperature=temperature, top_p=top_p,
                generator=torch.Generator().manual_seed(0), callback=lambda s: states.append(s.clone()))
    z = states[0]                                                                    # (n, length) after step 1
    grid = noise.sampling_grid(steps)
    a_t, a_s = noise.alpha(grid[0]), noise.alpha(grid[1])
    rate = ((a_s - a_t) / (1 - a_t)).item()
    unmasked = z != MASK
    sigma = math.sqrt(rate * (1 - rate) / (n * length))
    assert abs(unmasked.double().mean().item() - rate) < 5 * sigma
    # the all-mask input is the same for every sample, so p (length, V) is too
    p = noise.probs_from_logits(model(torch.full((1, length), MASK))[0], temperature, top_p)
    for i in range(length):
        tokens = z[unmasked[:, i], i]
        freq = torch.bincount(tokens, minlength=V).double() / len(tokens)
        assert (freq[p[i] == 0] == 0).all()                                         # top-p dropped, mask never
        torch.testing.assert_close(freq, p[i], atol=5 * math.sqrt(0.25 / len(tokens)), rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# (5) the no-change cache is exact and saves calls

@pytest.mark.parametrize('noise_removal', ['ancestral', 'greedy'])
@pytest.mark.parametrize('n,steps', [(1, L), (2, 4 * L), (4, 8)])
def test_cached_sampler_equals_uncached(noise_removal, n, steps):
    model = make_model(vocab_size=V, seq_len=L)
    runs = {}
    for use_cache in (False, True):
        rec = Recorder(model)
        x, nfe = mdlm.sample(rec, n, L, steps=steps, prompt=torch.tensor([2]), noise_removal=noise_removal,
                             generator=torch.Generator().manual_seed(42), use_cache=use_cache)
        assert nfe == len(rec.inputs)
        runs[use_cache] = (x, nfe)
    assert torch.equal(runs[True][0], runs[False][0])                                # exactly the same samples
    assert runs[False][1] == steps + 1
    if steps >= L:                                                                   # many empty steps
        assert runs[True][1] < runs[False][1]


# ----------------------------------------------------------------------------------------------------------------
# (6) overfitting one batch

def test_overfits_one_batch():
    model = make_model(vocab_size=V, n_layer=1, seq_len=L, randomize=False).train()
    x0 = (torch.arange(L)[None] + torch.arange(8)[:, None]) % (V - 1)                # 8 shifted ramps

    def nelbo():                                                                     # many t and masks, fixed
        with torch.no_grad():
            torch.manual_seed(0)
            total, n = mdlm.loss(model, x0.repeat(64, 1), train=False, generator=torch.Generator().manual_seed(0))
        return total.item() / n

    before = nelbo()
    assert before == pytest.approx((1 - noise.EPS) * math.log(V - 1), rel=0.05)      # uniform model, test (1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(100)
    for i in range(200):
        total, n = mdlm.loss(model, x0, generator=torch.Generator().manual_seed(1000 + i))
        opt.zero_grad()
        (total / n).backward()
        opt.step()
    after = nelbo()
    assert after < 0.6 * before, (before, after)


# ----------------------------------------------------------------------------------------------------------------
# (7) bad input

def test_bad_input_raises():
    model = make_model(vocab_size=V, seq_len=L)
    x0 = random_x0(2)
    with pytest.raises(ValueError, match="low_var.*elbo"):
        mdlm.loss(model, x0, loss_type='cross_entropy')
    with pytest.raises(ValueError, match="low_var.*elbo"):
        mdlm.loss(model, x0, train=False, loss_type='nelbo')
    with pytest.raises(ValueError, match="ancestral.*greedy.*none"):
        mdlm.sample(model, 1, L, noise_removal='argmax')
    with pytest.raises(ValueError, match="shorter prompt"):
        mdlm.sample(model, 1, 4, prompt=torch.arange(4))
    with pytest.raises(ValueError, match="mask id"):
        mdlm.sample(model, 1, L, prompt=torch.tensor([1, MASK]))
    with pytest.raises(ValueError, match="steps"):
        mdlm.sample(model, 1, L, steps=0)
