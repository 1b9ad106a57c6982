"""Tests for the Eso-LM family (nanodllm/eso.py, spec §4, §10 C5-C6).

Run: cd /work/main && python -m pytest -q tests/test_eso.py
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import make_model
from nanodllm import eso, noise

V = 11          # vocabulary incl. the mask id 10
MASK = V - 1


class Recorder(nn.Module):
    """Wraps a Model and records every call (inputs, keyword arguments, output) for white-box checks."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg, self.calls = model, model.cfg, []

    def new_cache(self):
        return self.inner.new_cache()

    def forward(self, idx, **kw):
        cache = kw.get('cache')
        n_cached = 0 if cache is None else len(cache)
        out = self.inner(idx, **kw)
        self.calls.append(dict(idx=idx.clone(), n_cached=n_cached, out=out.detach().clone(),
                               **{k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw.items() if k != 'cache'}))
        return out


def causal_last(model, tokens, pos):
    """Logits of the last row of a plain causal forward over one sequence (1-D tokens, 1-D positions) -> (V,)."""
    return model(tokens[None], attn='causal', pos=pos[None])[0, -1]


# ---------------------------------------------------------------------------------------------- options and masks
def test_bad_options_raise():
    model, x0 = make_model(), torch.randint(0, V - 1, (4, 8))
    with pytest.raises(ValueError, match='loss_type'):
        eso.loss(model, x0, loss_type='ce')
    with pytest.raises(ValueError, match='alpha0'):
        eso.loss(model, x0, alpha0=1.5)
    with pytest.raises(ValueError, match='batch_split'):
        eso.loss(model, x0, batch_split=-0.1)
    with pytest.raises(ValueError, match='batch_split'):   # 0 < alpha0 < 1 with no sequential rows
        eso.loss(model, x0, alpha0=0.5, batch_split=1.0)
    with pytest.raises(ValueError, match='prompt'):
        eso.sample(model, 2, 8, prompt=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match='alpha0'):
        eso.sample(model, 2, 8, alpha0=-0.5)


def test_sequential_mask_matches_brute_force():
    for L in range(1, 6):
        ref = torch.zeros(2 * L, 2 * L, dtype=torch.bool)
        for q in range(2 * L):
            for k in range(2 * L):
                if q < L and k < L:
                    ref[q, k] = k == q
                elif q < L:
                    ref[q, k] = k - L < q
                elif k >= L:
                    ref[q, k] = k - L <= q - L
        assert torch.equal(eso.sequential_mask(L), ref)


def test_causal_sorted_output_ignores_later_slots():
    """C6d: with permuted positions, the causal output at sorted slot i does not depend on the tokens at slots > i."""
    model = make_model()
    torch.manual_seed(0)
    B, L = 3, 12
    z = torch.randint(0, V, (B, L))
    pos = torch.stack([torch.randperm(L) for _ in range(B)])
    out = model(z, attn='causal', pos=pos)
    for i in range(L - 1):
        z2 = z.clone()
        z2[:, i + 1:] = torch.randint(0, V, (B, L - i - 1))
        out2 = model(z2, attn='causal', pos=pos)
        assert torch.allclose(out[:, :i + 1], out2[:, :i + 1], atol=1e-6)
    assert not torch.allclose(out[:, -1], out2[:, -1], atol=1e-3) or torch.equal(z, z2)
    # ...while the positions do matter: the same tokens at other positions give other outputs
    assert not torch.allclose(out, model(z, attn='causal', pos=pos.flip(1)), atol=1e-3)


# ---------------------------------------------------------------------------------------------- loss
def test_diffusion_part_by_hand():
    """Sorting is clean-first with targets and positions permuted together, and the loss is the alpha0-scaled NELBO
    (eval) or plain CE (low-var train) at the masked slots, recomputed here from the recorded forward."""
    model = Recorder(make_model())
    B, L, alpha0 = 6, 12, 0.7
    x0 = torch.randint(0, V - 1, (B, L))
    for train, loss_type in [(False, 'low_var'), (True, 'elbo'), (True, 'low_var')]:
        torch.manual_seed(1)
        model.calls.clear()
        # 0 < alpha0 < 1 through loss() needs a sequential sub-batch too: call the diffusion part alone
        nll = eso._diffusion_nll(model, x0, train, (1, 3), torch.Generator().manual_seed(5), loss_type, alpha0)
        assert len(model.calls) == 1
        call = model.calls[0]
        zt, pos = call['idx'], call['pos']
        assert call['attn'] == 'causal'
        assert torch.equal(pos.sort(dim=1).values, torch.arange(L).expand(B, L))      # a permutation per row
        masked = zt == MASK
        assert torch.all(masked[:, 1:] >= masked[:, :-1])                            # clean first
        x0_sorted = x0.gather(1, pos)
        assert torch.equal(zt[~masked], x0_sorted[~masked])
        t = noise.sample_t(B, 1, 3, torch.Generator().manual_seed(5))
        alpha_t = noise.alpha(t, alpha0)
        w = torch.ones(B) if (train and loss_type == 'low_var') else alpha0 * (1 - noise.EPS) / (1 - alpha_t)
        logp = call['out'].log_softmax(-1).gather(-1, x0_sorted[..., None])[..., 0]  # (B, L)
        ref = -(w[:, None] * logp * masked).sum()
        assert torch.allclose(nll, ref, rtol=1e-5)


def test_uniform_model_closed_form():
    """C1b: with the zero-init (uniform) model each masked token costs log(V-1) and E[masked | t] = 1 - alpha_t, so
    the NELBO per token is alpha0 (1 - eps) log(V-1) for every t and the low-var loss is E[1 - alpha_t] log(V-1)."""
    model = make_model(randomize=False)
    B, L = 32, 64
    x0 = torch.randint(0, V - 1, (B, L))
    for alpha0 in (1.0, 0.5):
        torch.manual_seed(0)
        # strata (1, 2): t in [0.5, 1], which keeps the 1/(1 - alpha_t) weight and the test's variance small
        nll = eso._diffusion_nll(model, x0, False, (1, 2), torch.Generator().manual_seed(0), 'low_var', alpha0)
        assert abs(nll.item() / (B * L) - alpha0 * (1 - noise.EPS) * math.log(V - 1)) < 0.12 * alpha0
        nll = eso._diffusion_nll(model, x0, True, (1, 2), torch.Generator().manual_seed(0), 'low_var', alpha0)
        t = noise.sample_t(B, 1, 2, torch.Generator().manual_seed(0))
        expected = (1 - noise.alpha(t, alpha0)).mean().item() * math.log(V - 1)
        assert abs(nll.item() / (B * L) - expected) < 0.05
    # the same through loss() at alpha0 = 1 (all rows diffusion)
    torch.manual_seed(0)
    nll, n = eso.loss(model, x0, train=False, strata=(1, 2), generator=torch.Generator().manual_seed(0))
    assert n == B * L and abs(nll.item() / n - (1 - noise.EPS) * math.log(V - 1)) < 0.12


def test_alpha0_zero_is_exact_left_to_right_nll():
    """alpha0 = 0: all rows sequential, every token masked, order = identity: query i sees x0[<i] and a mask at i.
    Independent reference: for every i a plain causal forward over [x0[:i], mask] with positions 0..i."""
    model = make_model()
    B, L = 3, 10
    x0 = torch.randint(0, V - 1, (B, L))
    torch.manual_seed(0)
    nll1, n1 = eso.loss(model, x0, train=True, alpha0=0.0, batch_split=0.7)
    torch.manual_seed(123)
    nll2, n2 = eso.loss(model, x0, train=False, alpha0=0.0, generator=torch.Generator().manual_seed(9))
    assert n1 == n2 == B * L
    assert torch.equal(nll1, nll2)                          # no t, no random order
    ref = 0.0
    for b in range(B):
        for i in range(L):
            logits = causal_last(model, torch.cat([x0[b, :i], torch.tensor([MASK])]), torch.arange(i + 1))
            ref += F.cross_entropy(logits, x0[b, i]).item()
    assert abs(nll1.item() - ref) < 1e-4 * L * B


def test_sequential_part_by_hand():
    """0 < alpha0 < 1: input [z0 ; x0] sorted clean-first (masks left to right), the same positions twice, and the
    loss at the masked slots equals a causal forward over [x0 sorted up to the slot ; mask] (spec §4.4)."""
    model = Recorder(make_model())
    B, L = 4, 12
    x0 = torch.randint(0, V - 1, (B, L))
    torch.manual_seed(3)
    nll = eso._sequential_nll(model, x0, alpha0=0.5)
    call = model.calls[0]
    idx, pos = call['idx'], call['pos']
    z, x, p = idx[:, :L], idx[:, L:], pos[:, :L]
    assert torch.equal(pos[:, L:], p) and torch.equal(x, x0.gather(1, p))
    assert torch.equal(call['attn'], eso.sequential_mask(L))
    masked = z == MASK
    assert torch.equal(z[~masked], x[~masked]) and masked.any() and (~masked).any()
    ref = 0.0
    for b in range(B):
        m = masked[b]
        assert torch.all(m[1:] >= m[:-1])                               # clean first
        assert torch.all(p[b, m].diff() > 0)                            # masks left to right
        for j in torch.nonzero(m).flatten().tolist():
            logits = causal_last(model.inner, torch.cat([x[b, :j], torch.tensor([MASK])]), p[b, :j + 1])
            ref += F.cross_entropy(logits, x[b, j]).item()
    assert abs(nll.item() - ref) < 1e-4


def test_both_parts_combine_per_token():
    """Total = seq_sum / seq_tokens + diff_sum / diff_tokens, returned as (total * diff_tokens, diff_tokens)."""
    model = make_model()
    B, L = 6, 8
    x0 = torch.randint(0, V - 1, (B, L))
    torch.manual_seed(7)
    nll, n = eso.loss(model, x0, train=False, generator=torch.Generator().manual_seed(1), alpha0=0.5, batch_split=0.5)
    torch.manual_seed(7)
    diff = eso._diffusion_nll(model, x0[:3], False, (0, 1), torch.Generator().manual_seed(1), 'low_var', 0.5)
    seq = eso._sequential_nll(model, x0[3:], 0.5)
    assert n == 3 * L
    assert torch.allclose(nll, (diff / (3 * L) + seq / (3 * L)) * n)


def test_alpha0_one_ignores_batch_split():
    model = make_model()
    x0 = torch.randint(0, V - 1, (5, 8))
    out = []
    for split in (0.4, 1.0):
        torch.manual_seed(0)
        out.append(eso.loss(model, x0, train=False, generator=torch.Generator().manual_seed(0), batch_split=split))
    assert out[0][1] == out[1][1] == 40 and torch.equal(out[0][0], out[1][0])


@pytest.mark.parametrize('alpha0, split', [(1.0, 1.0), (0.5, 0.5)])
def test_overfits_one_batch(alpha0, split):
    """150 Adam steps on one batch of constant rows (any clean token, or the previous one, gives the answer) from
    the paper's init lower the training loss (same t, masks and orders before and after) several times."""
    torch.manual_seed(0)
    model = make_model(randomize=False).train()
    x0 = torch.arange(8)[:, None].expand(8, 16).contiguous()          # row b = [b, b, ..., b]

    def fixed_loss():
        torch.manual_seed(1)
        with torch.no_grad():
            nll, n = eso.loss(model, x0, generator=torch.Generator().manual_seed(1), alpha0=alpha0, batch_split=split)
        return (nll / n).item()

    before = fixed_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        nll, n = eso.loss(model, x0, alpha0=alpha0, batch_split=split)
        opt.zero_grad()
        (nll / n).backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.3 * before, (before, after)


# ---------------------------------------------------------------------------------------------- schedule and sampler
def test_schedule_alpha0_one_sums_to_length():
    g = torch.Generator().manual_seed(0)
    for L, T in [(16, 4), (64, 64), (100, 7), (33, 200)]:
        for _ in range(20):
            counts = eso.unmask_schedule(L, T, 1.0, g)
            assert sum(counts) == L and min(counts) > 0 and len(counts) <= T + 1


@pytest.mark.parametrize('alpha0, expected', [(0.5, 511.7), (0.125, 127.9)])
def test_schedule_expected_diffusion_tokens(alpha0, expected):
    """C5: E[#diffusion tokens] = L (1 - (1 - alpha0) / (1 - alpha0 eps)), L = 1024, T = 64."""
    L = 1024
    assert abs(L * (1 - (1 - alpha0) / (1 - alpha0 * noise.EPS)) - expected) < 0.05
    g = torch.Generator().manual_seed(0)
    draws = [eso.unmask_schedule(L, 64, alpha0, g) for _ in range(400)]
    assert all(min(c) > 0 for c in draws)
    mean = sum(sum(c) for c in draws) / len(draws)
    assert abs(mean - expected) < 3.5, mean     # the standard error is 0.8 (alpha0 = 0.5) and 0.5 tokens


@pytest.mark.parametrize('alpha0', [1.0, 0.6, 0.0])
def test_sampler_bookkeeping(alpha0):
    """Every call fills its chunk (the schedule's counts, then one token at a time, left to right); nfe = number of
    calls = non-empty diffusion steps + tail; the prompt is kept; samples never contain the mask id."""
    model = make_model(seq_len=24)
    L, P, steps = 24, 3, 6
    prompt = torch.tensor([4, 1, 7])
    states = []
    x, nfe = eso.sample(model, 5, L, steps=steps, prompt=prompt, generator=torch.Generator().manual_seed(2),
                        callback=lambda s: states.append(s.clone()), alpha0=alpha0, temperature=0.9, top_p=0.95)
    counts = eso.unmask_schedule(L - P, steps, alpha0, torch.Generator().manual_seed(2))  # the same first draws
    n_tail = L - P - sum(counts)
    assert nfe == len(states) == len(counts) + n_tail
    if alpha0 == 1.0:
        assert n_tail == 0
    if alpha0 == 0.0:
        assert counts == [] and nfe == L - P                             # exactly one call per token
    prev = torch.full((5, L), MASK)
    prev[:, :P] = prompt
    last_tail_pos = torch.full((5,), P - 1)
    for i, s in enumerate(states):
        new = (prev == MASK) & (s != MASK)
        assert torch.equal(s[prev != MASK], prev[prev != MASK])          # decoded tokens are never changed
        assert torch.all(new.sum(1) == (counts[i] if i < len(counts) else 1))
        if i >= len(counts):                                             # sequential tail: left to right
            new_pos = new.float().argmax(1)
            assert torch.all(new_pos > last_tail_pos)
            last_tail_pos = new_pos
        prev = s
    assert torch.equal(x, states[-1]) and not (x == MASK).any() and torch.equal(x[:, :P], prompt.expand(5, P))


@pytest.mark.parametrize('alpha0, prompt', [(1.0, None), (0.5, torch.tensor([2, 9, 0, 5])), (0.0, torch.tensor([3]))])
def test_cache_matches_uncached(alpha0, prompt):
    """C6b: at every step the cached call's logits equal a plain causal forward over [every row cached so far ;
    chunk]; the cache holds only clean rows; cached and uncached samplers give identical samples."""
    model = Recorder(make_model(seq_len=20))
    L = 20
    x_c, nfe_c = eso.sample(model, 3, L, steps=5, prompt=prompt, generator=torch.Generator().manual_seed(4),
                            alpha0=alpha0, use_cache=True)
    assert len(model.calls) == nfe_c
    prefix_idx = torch.zeros(3, 0, dtype=torch.long)
    prefix_pos = torch.zeros(3, 0, dtype=torch.long)
    for call in model.calls:
        idx, pos, keep = call['idx'], call['pos'], call['keep']
        assert call['n_cached'] == prefix_idx.size(1)
        assert not (idx[:, :keep] == MASK).any() and (idx[:, keep:] == MASK).all()   # clean rows cached, masks not
        ref = model.inner(torch.cat([prefix_idx, idx], 1), attn='causal', pos=torch.cat([prefix_pos, pos], 1))
        assert torch.allclose(call['out'], ref[:, -idx.size(1):], atol=1e-5)
        prefix_idx, prefix_pos = torch.cat([prefix_idx, idx[:, :keep]], 1), torch.cat([prefix_pos, pos[:, :keep]], 1)
    x_u, nfe_u = eso.sample(model.inner, 3, L, steps=5, prompt=prompt, generator=torch.Generator().manual_seed(4),
                            alpha0=alpha0, use_cache=False)
    assert nfe_u == nfe_c and torch.equal(x_c, x_u)
