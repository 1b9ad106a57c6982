"""Duo (uniform-state diffusion, spec §3, §10 C2-C3): NELBO, posterior, corruption, sampler, overfitting.

Run: python -m pytest -q tests/test_duo.py
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import make_model
from nanodllm import duo, noise
from nanodllm.config import ModelConfig

ALPHAS = [noise.alpha(t) for t in (1e-3, 0.01, 0.2, 0.5, 0.9, 1.0)]   # the training range t in [1e-3, 1]


def onehot_log_p(x, V, dtype):
    """log_softmax of logits that put everything on x (others at -1e6, as the backbone does): p = onehot(x)."""
    logits = torch.full((*x.shape, V), -1e6, dtype=dtype)
    logits.scatter_(-1, x[..., None], 0.0)
    return logits.log_softmax(-1)


def bayes_posterior(p, zt, alpha_t, alpha_s):
    """q(z_s | z_t) when x ~ p, by Bayes' rule, independent of duo.posterior (spec §10 C3). p (V,) -> (V,).

    q(z_s | x) = alpha_s onehot(x) + (1 - alpha_s) / V; q(z_t | z_s) = alpha_{t|s} onehot(z_s) + (1 - alpha_{t|s}) / V;
    q(z_s = j | z_t) ∝ sum_x p_x q(z_s = j | x) q(z_t | z_s = j). For p = onehot(x) this is q(z_s | z_t, x).
    """
    V = p.numel()
    alpha_ts = alpha_t / alpha_s
    eye = torch.eye(V, dtype=torch.float64)
    q_s_given_x = alpha_s * eye + (1 - alpha_s) / V                   # [x, j]
    q_t_given_s = alpha_ts * eye + (1 - alpha_ts) / V                 # [j, z_t]
    joint = (p.double() @ q_s_given_x) * q_t_given_s[:, zt]           # (V,) over j
    return joint / joint.sum()


# ---------------------------------------------------------------------------------------------------------------
# the NELBO per token (spec §3.2, §10 C2)

@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-9), (torch.float32, 1e-6)])
def test_nelbo_zero_when_prediction_is_exact(dtype, tol):
    """C2a: p = onehot(x0) gives loss 0 at every z and alpha (the true and model reverse rates coincide)."""
    V = 7
    x0, zt = torch.meshgrid(torch.arange(V), torch.arange(V), indexing='ij')     # every (x0, z) pair, (V, V)
    for alpha_t in ALPHAS:
        a = torch.tensor(alpha_t, dtype=dtype)
        loss = duo.nelbo_per_token(onehot_log_p(x0, V, dtype), x0, zt, a, noise.dalpha(a))
        assert loss.dtype == dtype
        assert loss.abs().max() < tol, (alpha_t, loss.abs().max())


def test_nelbo_nonnegative_and_positive_for_wrong_predictions():
    """C2b: loss >= 0 for random Dirichlet p (with and without p_mask = 0), random V, x0, z and alpha; and it is
    clearly > 0 when p is far from onehot(x0)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    for V in (5, 8, 11):
        N = 4000
        p = torch.distributions.Dirichlet(torch.full((V,), 0.5, dtype=torch.float64)).sample((N,))   # (N, V)
        p[N // 2:, -1] = 0                                                       # half with p_mask = 0 (the model)
        p = p / p.sum(-1, keepdim=True)
        x0 = torch.randint(0, V, (N,), generator=g)
        zt = torch.where(torch.rand(N, generator=g) < 0.5, x0, torch.randint(0, V, (N,), generator=g))
        t = 1e-3 + (1 - 1e-3) * torch.rand(N, generator=g, dtype=torch.float64)
        loss = duo.nelbo_per_token(p.log()[None], x0[None], zt[None], noise.alpha(t)[None], noise.dalpha(t)[None])[0]
        assert loss.min() > -1e-10
        assert loss.median() > 1e-2                           # random p is wrong: the loss is far from 0
        loss32 = duo.nelbo_per_token(p.float().log()[None], x0[None], zt[None], noise.alpha(t).float()[None],
                                     noise.dalpha(t).float()[None])[0]
        # fp32 agrees with float64; near t = 1 the 1/(V alpha) prefactor (~1e3/V) amplifies rounding to ~1e-4
        assert torch.allclose(loss32.double(), loss, rtol=1e-3, atol=1e-3)


def test_nelbo_is_the_kl_rate_of_the_posterior():
    """C2d: loss(z) = lim_{Δ->0} KL(q(z_{t-Δ} | z, x0) || q(z_{t-Δ} | z, p)) / Δ, brute force over all x0, z.

    alpha_s = alpha(t - Δ) > alpha_t. One-sided difference with Δ = 1e-7: the truncation error is O(Δ / alpha_t),
    about 1e-4 relative at t = 1 where alpha_t = 1e-3 (Δ = 1e-6 would sit right at the 1e-3 tolerance there).
    """
    torch.manual_seed(0)
    V, delta = 6, 1e-7
    for t in (1e-3, 0.05, 0.5, 0.95, 1.0):
        t = torch.tensor(t, dtype=torch.float64)
        alpha_t, alpha_s = noise.alpha(t), noise.alpha(t - delta)
        for p in (torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample(),
                  F.softmax(torch.cat([torch.randn(V - 1, dtype=torch.float64), torch.tensor([-1e6])]), -1)):
            for x in range(V):
                for z in range(V):
                    q_true = duo.posterior(F.one_hot(torch.tensor(x), V), torch.tensor(z), alpha_t, alpha_s)
                    q_model = duo.posterior(p, torch.tensor(z), alpha_t, alpha_s)
                    keep = q_true > 0
                    kl_rate = (q_true[keep] * (q_true[keep] / q_model[keep]).log()).sum() / delta
                    loss = duo.nelbo_per_token(p.log()[None, None], torch.tensor([[x]]), torch.tensor([[z]]),
                                               alpha_t, noise.dalpha(t))[0, 0]
                    assert abs(kl_rate - loss) <= 1e-3 * abs(loss) + 1e-9, (t, x, z, kl_rate, loss)


def uniform_prediction_nelbo(alpha_t, V):
    """Closed form of the Duo NELBO when the model predicts p uniform over the V-1 real ids (p_mask = 0), which is
    exactly what the zero-initialised backbone outputs, for a real token x0. Returns (probs, values) of the three
    cases of z ~ q(z | x0), so that E = sum probs * values.

    Derivation (spec §3.2, rate = -alpha'/(V alpha) = (1 - eps) / (V alpha), beta = 1 - alpha):
      xbar_theta_j = V alpha / (V - 1) + beta =: a for real j, and = beta at the mask; with u = V alpha / beta,
      r = log(a / beta) = log(1 + u / (V - 1)), c = beta / (V alpha + beta) = 1 / (1 + u), log c = -log(1 + u).
      A = sum_j log(xbar_theta_j / xbar_theta_z); loss = rate (T2 - T1).
      (i)  z = x0, prob alpha + beta/V: xbar_z = V alpha + beta, xbar_theta_z = a, A = -r,
           T1 = V/(V alpha + beta) - V/a,  T2 = -c A + (V-1) c log c = c r - (V-1) c log(1+u).
      (ii) z real != x0, prob (V-2) beta/V: xbar_z = beta, xbar_theta_z = xbar_theta_x0 = a, A = -r,
           T1 = V/beta - V/a,  T2 = -A - u log(a/a) - (1/c) log c = r + (1+u) log(1+u).
      (iii) z = mask, prob beta/V: xbar_z = xbar_theta_z = beta so T1 = 0; A = (V-1) r; log(xbar_theta_x0 /
           xbar_theta_z) = r, so T2 = -(V-1) r - u r + (1+u) log(1+u).
    """
    beta = 1 - alpha_t
    u = V * alpha_t / beta
    a = V * alpha_t / (V - 1) + beta
    r = math.log1p(u / (V - 1))
    c, log1p_u = 1 / (1 + u), math.log1p(u)
    rate = (1 - noise.EPS) / (V * alpha_t)
    values = [rate * (c * r - (V - 1) * c * log1p_u - V / (V * alpha_t + beta) + V / a),
              rate * (r + (1 + u) * log1p_u - V / beta + V / a),
              rate * ((1 + u) * log1p_u - (V - 1 + u) * r)]
    probs = [alpha_t + beta / V, (V - 2) * beta / V, beta / V]
    return probs, values


def test_uniform_prediction_closed_form():
    """C2c: the expectation over z ~ q(z | x0), summed exactly over all V values of z, equals the closed form."""
    for V in (5, 9, 11):
        log_p = torch.full((V,), -1e6, dtype=torch.float64)
        log_p[:V - 1] = 0
        log_p = log_p.log_softmax(-1)                          # uniform over the V-1 real ids, p_mask = 0
        for alpha_t in ALPHAS:
            for x0 in (0, V - 2):
                zt = torch.arange(V)                           # every z
                q_z = alpha_t * F.one_hot(torch.tensor(x0), V).double() + (1 - alpha_t) / V
                loss = duo.nelbo_per_token(log_p.expand(1, V, V), torch.full((1, V), x0), zt[None],
                                           torch.tensor(alpha_t, dtype=torch.float64), noise.dalpha(alpha_t))[0]
                probs, values = uniform_prediction_nelbo(alpha_t, V)
                expected = sum(pr * v for pr, v in zip(probs, values))
                assert abs((q_z * loss).sum().item() - expected) < 1e-9 * max(1.0, abs(expected)), (V, alpha_t)


def test_zero_init_model_loss_matches_closed_form():
    """loss() of the zero-init backbone (p uniform over the V-1 real ids, whatever the input) agrees with the
    closed form at the very t it drew (recomputed from the same generator seed), within 4 standard deviations."""
    V, B, L = 9, 512, 16
    model = make_model(vocab_size=V, seq_len=L, randomize=False)
    torch.manual_seed(0)
    x0 = torch.randint(0, V - 1, (B, L))
    nll, n_tokens = duo.loss(model, x0, generator=torch.Generator().manual_seed(1))
    assert n_tokens == B * L and nll.requires_grad
    t = noise.sample_t(B, generator=torch.Generator().manual_seed(1)).double()
    mean = var = 0.0
    for alpha_t in noise.alpha(t).tolist():
        probs, values = uniform_prediction_nelbo(alpha_t, V)
        m = sum(pr * v for pr, v in zip(probs, values))
        mean += L * m
        var += L * (sum(pr * v * v for pr, v in zip(probs, values)) - m * m)
    assert abs(nll.item() - mean) < 4 * math.sqrt(var), (nll.item(), mean, math.sqrt(var))


def test_loss_feeds_sigma_of_the_stratified_t():
    """loss() passes sigma_t = -log alpha_t (raw, spec §9.7) of the antithetic t of its slice (spec §0.3), and
    attends bidirectionally."""
    model = make_model(vocab_size=7, seq_len=8)
    seen = {}
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True)
    x0 = torch.randint(0, 6, (4, 8))
    duo.loss(model, x0, strata=(1, 3), generator=torch.Generator().manual_seed(5))
    t = noise.sample_t(4, 1, 3, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(seen['sigma'], -torch.log(noise.alpha(t)), rtol=1e-6)
    assert seen['attn'] == 'full'


# ---------------------------------------------------------------------------------------------------------------
# the posterior (spec §3.4, §10 C3)

def test_posterior_is_bayes_rule():
    """C3: with p = onehot(x0) it is Bayes' rule; for any p it is Bayes' rule with x0 ~ p (the formula is linear in
    p above and below); rows are >= 0 and sum to 1; at alpha_s = 1 and p = onehot(x0) it returns x0 surely."""
    torch.manual_seed(0)
    V = 6
    for t, s in [(1.0, 0.9), (0.5, 0.2), (0.1, 0.099), (1.0, 1e-5)]:
        alpha_t, alpha_s = noise.alpha(t), noise.alpha(s)
        ps = [F.one_hot(torch.tensor(x), V).double() for x in range(V)]
        ps += [torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample() for _ in range(3)]
        for p in ps:
            for z in range(V):
                q = duo.posterior(p, torch.tensor(z), alpha_t, alpha_s)
                assert q.dtype == torch.float64 and q.min() >= 0
                assert abs(q.sum().item() - 1) < 1e-12
                assert torch.allclose(q, bayes_posterior(p, z, alpha_t, alpha_s), rtol=0, atol=1e-12)
    for x in range(V):
        q = duo.posterior(F.one_hot(torch.tensor(x), V).expand(V, V), torch.arange(V), noise.alpha(0.3), 1.0)
        assert torch.equal(q, F.one_hot(torch.tensor(x), V).double().expand(V, V))   # every z_t -> x0


def test_corruption_statistics():
    """Spec §3.1: P(z = x0) = alpha + (1 - alpha)/V, and every other id, the mask included, has (1 - alpha)/V."""
    torch.manual_seed(0)
    V, alpha_t = 5, 0.3
    x0 = torch.randint(0, V - 1, (400, 500))                   # real tokens only, as in data
    zt = duo.corrupt(x0, torch.full((400, 1), alpha_t), V)
    n = x0.numel()
    assert abs((zt == x0).sum().item() / n - (alpha_t + (1 - alpha_t) / V)) < 5e-3
    for j in range(V):                                         # each other id j, mask included, appears as noise
        freq = ((zt == j) & (x0 != j)).sum().item() / (x0 != j).sum().item()
        assert abs(freq - (1 - alpha_t) / V) < 5e-3, (j, freq)
    torch.manual_seed(0)
    zt_rows = duo.corrupt(x0[:2], torch.tensor([[1.0], [noise.EPS]]), V)   # one alpha per sequence
    assert torch.equal(zt_rows[0], x0[0]) and (zt_rows[1] != x0[1]).float().mean() > 0.7


# ---------------------------------------------------------------------------------------------------------------
# the sampler (spec §3.4)

class ConstantModel(nn.Module):
    """Stand-in network: the same logits at every position whatever the input, so p is known exactly."""

    def __init__(self, logits):
        super().__init__()
        V = logits.numel()
        self.cfg = ModelConfig(vocab_size=V, n_layer=1, n_head=1, n_embd=2, seq_len=4)
        self.logits = nn.Parameter(logits.clone())

    def forward(self, idx, sigma=None, attn='full', pos=None, cache=None, keep=None):
        return self.logits.expand(*idx.shape, -1)


def nucleus(q, top_p):
    """Independent top-p on one distribution q (V,): keep the most probable ids until their mass reaches top_p."""
    order = q.argsort(descending=True)
    keep = torch.zeros_like(q, dtype=torch.bool)
    mass = 0.0
    for j in order.tolist():
        keep[j] = True
        mass += q[j].item()
        if mass >= top_p:
            break
    q = q * keep
    return q / q.sum()


@pytest.mark.parametrize('temperature,top_p', [(1.0, 1.0), (0.7, 0.8)])
def test_sampler_distribution_brute_force(temperature, top_p):
    """With a constant network, tokens evolve independently: the final distribution is the uniform prior pushed
    through the exact Bayes transition matrices of each step (nucleus on the posterior), noise removal included."""
    V, steps = 5, 2
    logits = torch.tensor([1.0, -0.5, 0.3, 0.0, -1e6])
    model = ConstantModel(logits)
    p = F.softmax(logits.double() / temperature, -1)
    grid = noise.sampling_grid(steps)
    dist = torch.full((V,), 1.0 / V, dtype=torch.float64)     # uniform prior, mask included
    for k in range(steps + 1):
        alpha_t = noise.alpha(grid[k]).item()
        alpha_s = noise.alpha(grid[k + 1]).item() if k < steps else 1.0
        M = torch.stack([nucleus(bayes_posterior(p, z, alpha_t, alpha_s), top_p) for z in range(V)])   # [z_t, z_s]
        dist = dist @ M
    g = torch.Generator().manual_seed(0)
    x, nfe = duo.sample(model, 20000, 2, steps=steps, temperature=temperature, top_p=top_p, generator=g)
    assert nfe == steps + 1
    freq = torch.bincount(x.flatten(), minlength=V).double() / x.numel()
    assert freq[V - 1] == 0 and dist[V - 1] < 1e-12
    assert (freq - dist).abs().max() < 4 * math.sqrt(0.25 / x.numel()), (freq, dist)


class LateSwitchModel(ConstantModel):
    """Uniform over the real ids, except at the noise-removal call (sigma ~ 1e-5), where p ~ onehot(0)."""

    def forward(self, idx, sigma=None, attn='full', pos=None, cache=None, keep=None):
        logits = torch.zeros(*idx.shape, self.cfg.vocab_size)
        logits[..., -1] = -1e6
        logits[sigma < 1e-3, :, 0] = 30.0
        return logits


@pytest.mark.parametrize('noise_removal', ['ancestral', 'greedy'])
def test_noise_removal_follows_the_last_prediction(noise_removal):
    """The last call is at t0 = 1e-5 with alpha_s = 1: q ∝ alpha_t V p_z [j = z] + (1 - alpha_t) p_j, so where p puts
    (almost) no mass on z the token moves to where p is, whatever z was; greedy takes argmax p. Here p ~ onehot(0)
    only at that call, so every non-prompt token ends as 0 (a no-op last step would keep the uniform state)."""
    model = LateSwitchModel(torch.zeros(6))
    states = []
    x, nfe = duo.sample(model, 200, 8, steps=3, prompt=torch.tensor([4]), noise_removal=noise_removal,
                        generator=torch.Generator().manual_seed(0), callback=lambda s: states.append(s.clone()))
    assert nfe == 4 and (states[-2][:, 1:] != 0).float().mean() > 0.5
    assert (x[:, 1:] == 0).all() and (x[:, 0] == 4).all()


@pytest.mark.parametrize('noise_removal', ['ancestral', 'greedy'])
def test_sampler_nfe_prompt_sigma_and_no_mask(noise_removal):
    """NFE = steps + 1; every call gets the clean prompt and sigma_t = -log alpha(tau_k) (tau_steps = 1e-5 for the
    noise removal); the prompt never changes; the final sample has no mask id while the prior does contain it."""
    V, L = 7, 12
    model = make_model(vocab_size=V, seq_len=L)
    prompt = torch.tensor([3, 1, 4])
    for steps in (1, 4, 8):
        calls = []
        hook = model.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args[0].clone(), kwargs['sigma'])),
                                               with_kwargs=True)
        states = []
        x, nfe = duo.sample(model, 32, L, steps=steps, prompt=prompt, generator=torch.Generator().manual_seed(steps),
                            callback=lambda s: states.append(s.clone()), noise_removal=noise_removal)
        hook.remove()
        assert nfe == steps + 1 == len(calls) == len(states)
        grid = noise.sampling_grid(steps)
        for k, (idx, sigma) in enumerate(calls):
            assert (idx[:, :3] == prompt).all()
            assert torch.allclose(sigma, -torch.log(noise.alpha(grid[k])).float().expand(32))
        assert (calls[0][0][:, 3:] == V - 1).any()             # the uniform prior includes the mask id
        assert x.shape == (32, L) and (x != V - 1).all()
        assert all((s[:, :3] == prompt).all() for s in states) and torch.equal(states[-1], x)


def test_greedy_tail_is_the_argmax_of_the_last_call():
    """'greedy' noise removal = argmax_j p_j(z, sigma(1e-5)) at every non-prompt position: deterministic given the
    state before the last call (two different generators for the tail give the same answer)."""
    V, L = 9, 10
    model = make_model(vocab_size=V, seq_len=L)
    prompt = torch.tensor([2, 5])
    states = []
    x, _ = duo.sample(model, 16, L, steps=3, prompt=prompt, generator=torch.Generator().manual_seed(0),
                      callback=lambda s: states.append(s.clone()), noise_removal='greedy')
    before = states[-2]
    sigma = -torch.log(noise.alpha(torch.tensor(noise.T_END, dtype=torch.float64))).float().expand(16)
    expected = model(before, sigma=sigma, attn='full').argmax(-1)
    assert torch.equal(x[:, 2:], expected[:, 2:]) and (x[:, :2] == prompt).all()
    ancestral, _ = duo.sample(model, 16, L, steps=3, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(ancestral, x)                       # ancestral removal samples instead


def test_sampler_rejects_bad_arguments():
    model = make_model(vocab_size=7, seq_len=8)
    with pytest.raises(ValueError, match='noise_removal'):
        duo.sample(model, 2, 8, noise_removal='none')
    with pytest.raises(ValueError, match='prompt'):
        duo.sample(model, 2, 4, prompt=torch.arange(4))
    with pytest.raises(ValueError, match='mask id'):
        duo.sample(model, 2, 8, prompt=torch.tensor([6]))


# ---------------------------------------------------------------------------------------------------------------
# training

def test_overfits_one_batch():
    """A tiny model trained 150 Adam steps on one batch clearly lowers its NELBO (evaluated with fixed seeds, so
    before and after see the same t and z). The batch alternates two tokens per sequence: the unigram and the
    neighbours both tell the clean token, so the optimum is far below the uniform prediction's ~log(V-1)."""
    V, L = 11, 16
    model = make_model(vocab_size=V, seq_len=L, n_layer=1, n_embd=32, randomize=False).train()
    pairs = torch.tensor([[2, 5], [5, 2], [1, 7], [7, 1]])
    x0 = pairs[:, torch.arange(L) % 2].repeat(2, 1)                              # (8, L)

    def eval_nelbo():
        torch.manual_seed(123)
        with torch.no_grad():
            nll, n = duo.loss(model, x0.repeat(16, 1), train=False, generator=torch.Generator().manual_seed(7))
        return nll.item() / n

    before = eval_nelbo()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for _ in range(150):
        nll, n = duo.loss(model, x0, generator=g)
        opt.zero_grad()
        (nll / n).backward()
        opt.step()
    after = eval_nelbo()
    assert before > 2.0 and after < 0.5 * before, (before, after)
