"""Duo: uniform-state diffusion (spec §3): corrupt by random tokens, predict the clean tokens, denoise to sample.

The surface every family shares: `OPTIONS`, `loss(model, x0, ...) -> (nll_sum, n_tokens)` and
`sample(model, n, length, ...) -> (x, nfe)`. How Duo differs from AR (spec §1):
- attention is bidirectional ('full') and all L positions are scored, not L-1 shifted ones;
- a time t ~ U[1e-3, 1] per sequence replaces each token, with probability 1 - alpha_t, by an id drawn uniformly
  from ALL V ids, the mask id included (the paper's V counts it, spec §0.1, §9.2); the draw may equal x0;
- Duo is the one time-conditioned family: the network gets sigma_t = -log alpha_t, raw (spec §0.4, §9.7);
- the loss is the closed-form continuous-time NELBO of spec §3.2 at EVERY position (a noisy token may be right or
  wrong, so there is no carry-over), in training and in evaluation alike (no low-var variant);
- sampling starts from uniform noise over [0, V) and every position may change at every step (spec §3.4).
Conditioning (`given`, issue 18): given positions get no noise and are not scored; the sampler feeds them clean
and resets them after every step; `block_size` decodes semi-AR blocks (how, for uniform noise: `sample`).
The Duo paper's few-step training lives in its own modules: the Gumbel-softmax curriculum in nanodllm/curriculum.py
(spec §3.5, `train.py --curriculum`) and discrete consistency distillation in nanodllm/distill.py (spec §3.6,
`train.py --distill-from CKPT`); the paper's scaling code trains Duo from scratch on the discrete NELBO (spec §11).
"""
import torch
import torch.nn.functional as F

from . import decode, noise

OPTIONS = {}               # Duo trains and evaluates on its NELBO; there is no low-var variant (spec §3.2)
TIME_CONDITIONING = True   # sigma_t = -log alpha_t feeds adaLN (spec §0.4)
NOISE_REMOVALS = ('ancestral', 'greedy')


def corrupt(x0, alpha_t, vocab_size, generator=None):
    """Uniform forward process q(z_t | x0) = alpha_t onehot(x0) + (1 - alpha_t) / V (spec §3.1).

    x0 (B, L) long, alpha_t (B, 1): one t per sequence -> zt (B, L): each token independently, with probability
    1 - alpha_t, is replaced by an id uniform on [0, V) (mask id included; it may equal x0), so
    P(z = x0) = alpha_t + (1 - alpha_t) / V. Draws from the global RNG, or per row from a noise.RowNoise `generator`.
    """
    noisy = noise.uniform(x0.shape, x0.device, generator) < 1 - alpha_t            # (B, L) bool
    uniform = noise.randint(vocab_size, x0.shape, x0.device, generator)             # (B, L)
    return torch.where(noisy, uniform, x0)


def nelbo_per_token(log_p, x0, zt, alpha_t, dalpha_t):
    """Closed-form Duo NELBO at every position (spec §3.2) -> (B, L), in log_p's dtype (fp32 training, float64 tests).

    log_p (B, L, V): log x_theta(z_t) up to a constant per position: a log-softmax, or the raw logits (it is
    normalised here), with the mask entry at -1e6 (so p_mask = 0); x0, zt (B, L) long; alpha_t, dalpha_t: floats or
    tensors broadcastable to (B, L), e.g. (B, 1), with 0 < alpha_t < 1, dalpha_t < 0 (training has t >= 1e-3, so
    1 - alpha_t >= ~1e-3 and nothing below divides by ~0).

    What it is: the KL rate between two jump processes that leave z = z_t. With xbar = V alpha onehot(x0) + (1 - alpha)
    (so xbar_z = V q(z | x0)) and xbar_theta = V alpha p + (1 - alpha), the true reverse process jumps z -> j at rate
    R_j = rate xbar_j / xbar_z and the model at R^_j = rate xbar_theta_j / xbar_theta_z, rate = -alpha' / (V alpha):
        loss = sum_j [R^_j - R_j + R_j log(R_j / R^_j)]  >= 0, and = 0 iff p = onehot(x0)
             = (alpha' / (V alpha)) (T1 - T2),  sum_j xbar_j = sum_j xbar_theta_j = V,
    with T1 = V / xbar_z - V / xbar_theta_z (the exit-rate gap) and T2 = sum_j (xbar_j / xbar_z) log((xbar_j / xbar_z)
    / (xbar_theta_j / xbar_theta_z)) (the jump log-ratio), summed in closed form over j as in the spec.
    tests/test_duo.py checks it against the KL rate of `posterior` by brute force.

    How it is computed: every log xbar_theta_j is log(1 - alpha) + l_j with l_j = log(1 + u p_j), u = V alpha /
    (1 - alpha), and l_j = softplus(log p_j + log u). The only sum over the V entries is S = sum_j l_j, so the
    (B, L, V) work is one log-softmax, one add and one softplus (three temporaries) and one gather (z_t and x0
    together: one scatter in the backward); everything else is per position.
    """
    V = log_p.size(-1)
    alpha_t = torch.as_tensor(alpha_t, dtype=log_p.dtype, device=log_p.device).expand(zt.shape)   # (B, L)
    dalpha_t = torch.as_tensor(dalpha_t, dtype=log_p.dtype, device=log_p.device).expand(zt.shape)  # (B, L)
    one_minus_alpha = 1 - alpha_t                                                   # (B, L), >= ~1e-3
    u = V * alpha_t / one_minus_alpha                                               # (B, L), up to ~1e3 V
    log_u = torch.log(u)                                                            # (B, L)
    log_p = log_p.log_softmax(dim=-1)                                               # (B, L, V), normalised
    S = F.softplus(log_p + log_u[..., None]).sum(-1)                                # (B, L) sum_j l_j
    log_p_z, log_p_x = log_p.gather(-1, torch.stack([zt, x0], dim=-1)).unbind(-1)  # (B, L) each: one gather
    l_z = F.softplus(log_p_z + log_u)                                               # (B, L) log(xbar_theta_z/(1-a))
    l_x = F.softplus(log_p_x + log_u)                                               # (B, L) log(xbar_theta_x/(1-a))
    log1p_u = F.softplus(log_u)                                                     # (B, L) log(1 + u) = -log c
    xbar_theta_z = V * alpha_t * log_p_z.exp() + one_minus_alpha                    # (B, L)

    is_clean = x0 == zt                                                             # (B, L) bool: z = x0
    xbar_x = V * alpha_t + one_minus_alpha                                          # (B, L) xbar at j = x0
    xbar_z = torch.where(is_clean, xbar_x, one_minus_alpha)                         # (B, L) = V q(z_t | x0)
    # c = xbar_j / xbar_x for j != x0 = (1 - alpha) / (V alpha + 1 - alpha) = 1 / (1 + u), in (0, 1)
    c = one_minus_alpha / xbar_x                                                    # (B, L)

    exit_rate_gap = V / xbar_z - V / xbar_theta_z                                   # (B, L) the spec's T1
    # The spec's T2 with A = sum_j log(xbar_theta_j / xbar_theta_z) = S - V l_z and log c = -log(1 + u). Both cases
    # are regrouped so that a perfect prediction (p = onehot(x0)) gives exactly 0 term by term, with no cancellation
    # of large terms (u ~ 1e3 V at t = 1e-3):
    # z = x0: T2 = -c A + (V - 1) c log c = -c [(S - l_z) - (V - 1)(l_z - log(1 + u))]   (xbar_j / xbar_z = c, j != z)
    jump_log_ratio_clean = -c * ((S - l_z) - (V - 1) * (l_z - log1p_u))             # (B, L)
    # z != x0: T2 = -A - u (log xbar_theta_x - log xbar_x - log xbar_theta_z + log(1 - alpha)) - (1/c) log c, and
    #   with 1/c = 1 + u:  = -A - u ((l_x - log(1 + u)) - l_z) + log(1 + u)      (xbar_j / xbar_z = 1 or 1/c at x0)
    jump_log_ratio_noisy = -(S - V * l_z) - u * ((l_x - log1p_u) - l_z) + log1p_u   # (B, L)
    jump_log_ratio = torch.where(is_clean, jump_log_ratio_clean, jump_log_ratio_noisy)   # (B, L) the spec's T2

    return dalpha_t / (V * alpha_t) * (exit_rate_gap - jump_log_ratio)              # (B, L), >= 0


def loss(model, x0, train=True, strata=(0, 1), generator=None, given=None):
    """x0 (B, L) -> (sum of the Duo NELBO over all B L positions, B L) (spec §3.2, §3.3).

    One t per sequence, antithetic over the global batch: this micro-batch is slice `strata` = (k, K) (spec §0.3).
    `train` does not change the objective: Duo trains and evaluates on the same NELBO.
    given: None or (B, L) bool, True = a given (prompt) position (conditional training, sft.md §2): it is fed clean
      (the uniform noise reaches response positions only: the draws are made everywhere, then the prompt is put
      back, so the random stream does not depend on `given`), sigma_t still describes the noise of the response,
      and the closed-form NELBO is summed over the not-given positions only. n_tokens is then a (0-d, long) tensor:
      the number of not-given positions (response + EOS padding, "token" normalisation). given=None (or all False)
      returns exactly the unconditional loss.
    """
    given = noise.given_mask(given, x0)
    B, L = x0.shape
    V = model.cfg.vocab_size
    t = noise.sample_t(B, *strata, generator=generator, device=x0.device)           # (B,) in [1e-3, 1]
    alpha_t, dalpha_t = noise.alpha(t)[:, None], noise.dalpha(t)[:, None]           # (B, 1) each
    zt = corrupt(x0, alpha_t, V, generator)                                         # (B, L)
    if given is not None:
        zt = torch.where(given, x0, zt)                                             # the prompt stays clean
    sigma_t = -torch.log(alpha_t[:, 0])                                             # (B,) raw, no rescaling (§9.7)
    logits = model(zt, sigma=sigma_t, attn='full')                                  # (B, L, V) fp32, mask = -1e6
    nll = nelbo_per_token(logits, x0, zt, alpha_t, dalpha_t)                        # (B, L), log-softmax inside
    if given is None:
        return nll.sum(), B * L
    return nll.masked_fill(given, 0.0).sum(), (~given).sum()                       # response + pad terms only


def posterior(p, zt, alpha_t, alpha_s):
    """q(z_s | z_t, x := p) for s < t, in float64 (spec §3.4) -> (..., V), rows summing to 1.

    p (..., V) probabilities (a one-hot x0 gives the exact Bayes posterior); zt (...) long; alpha_t, alpha_s floats
    or tensors broadcastable to (..., 1). With alpha_{t|s} = alpha_t / alpha_s (spec §9.13):
      q_j = [alpha_t V p_j [j = z_t] + (alpha_{t|s} - alpha_t) [j = z_t] + (alpha_s - alpha_t) p_j
             + (1 - alpha_{t|s}) (1 - alpha_s) / V] / [alpha_t V p_{z_t} + 1 - alpha_t]
    """
    p = p.double()
    V = p.size(-1)
    alpha_t = torch.as_tensor(alpha_t, dtype=torch.float64, device=p.device)
    alpha_s = torch.as_tensor(alpha_s, dtype=torch.float64, device=p.device)
    alpha_ts = alpha_t / alpha_s                                                    # alpha_{t|s}
    zt_onehot = torch.nn.functional.one_hot(zt, V).double()                         # (..., V)
    p_zt = p.gather(-1, zt[..., None])                                              # (..., 1)
    numerator = (alpha_t * V * p * zt_onehot + (alpha_ts - alpha_t) * zt_onehot + (alpha_s - alpha_t) * p
                 + (1 - alpha_ts) * (1 - alpha_s) / V)                              # (..., V)
    return numerator / (alpha_t * V * p_zt + 1 - alpha_t)                           # (..., V)


def _network(model, x, t):
    """One network call at time t (a float64 0-d tensor) on the state x (n, L): logits (n, L, V) with sigma_t."""
    sigma_t = -torch.log(noise.alpha(t)).float().to(x.device).expand(x.size(0))    # (n,)
    return model(x, sigma=sigma_t, attn='full')


def _step(model, x, t, alpha_s, temperature, top_p, generator, greedy_tail):
    """One ancestral step of the whole state x (n, L) from time t to alpha_s (alpha_s = 1: noise removal)."""
    logits = _network(model, x, t)                                                  # (n, L, V)
    if greedy_tail:
        return logits.argmax(dim=-1)                                                # greedy tail: argmax_j p_j
    alpha_t = noise.alpha(t)
    p = noise.probs_from_logits(logits, temperature)                                # (n, L, V) float64, p_mask = 0
    q = posterior(p, x, alpha_t, alpha_s)                                           # (n, L, V)
    if top_p < 1.0:
        q = noise.top_p_filter(q.log(), top_p).softmax(dim=-1)                      # nucleus on log q (spec §3.4)
    if temperature == 0:
        return q.argmax(dim=-1)                                                     # greedy: the posterior's mode
    return noise.sample_categorical(q, generator)                                   # (n, L)


@torch.no_grad()
def sample(model, n, length, steps=None, prompt=None, temperature=1.0, top_p=1.0, generator=None, callback=None,
           noise_removal='ancestral', given=None, order='random', block_size=None):
    """Ancestral sampling from uniform noise (spec §3.4) -> (x (n, length) long, nfe = steps + 1).

    The prior is uniform on [0, V), mask id included (as in the paper). Step k goes from t = tau_k to s = tau_{k+1}
    on the grid linspace(1, 1e-5, steps + 1) (steps default: length); every step calls the network with sigma_t
    (Duo is time-conditioned, so no step can reuse an earlier call), takes p = softmax(logits / temperature) in
    float64 and draws z_s from the posterior q(z_s | z_t, p). Top-p is applied to log q, the POSTERIOR, as the
    paper's code does (spec §3.4, §9.13). Every position may change at every step. temperature=0 is greedy: p is
    the one-hot argmax and every step takes the posterior's mode (the sample then depends only on the prior draw).
    prompt / given (n, length) long, decode.FREE = free: clean, observed tokens at any positions (prefix, infill
      gaps, any mask): fed to the network clean at every call (sigma_t still describes the noisy rest) and reset
      after every step, so they never change.
    noise_removal (one more network call at t0 = 1e-5):
      'ancestral': alpha_s = 1, q ∝ alpha_t V p_{z_t} [j = z_t] + (1 - alpha_t) p_j, never the mask id;
      'greedy': the Duo paper's "greedy tail": argmax_j p_j at every free position, deterministic.
    The final sample never contains the mask id (p_mask = 0 exactly). callback(x) is called after every step,
    the noise removal included.
    order: 'random' only; uniform noise has no masks to commit by confidence (a ValueError names the fix).
    block_size: semi-autoregressive blocks, read for uniform noise as follows (there is no mask to fill). Blocks are
      decoded left to right, `steps` network calls each (default: block_size), nfe = steps per block that has a
      free position. While block b is decoded, the positions before it are clean (given, or committed by earlier
      blocks) and fed as observed tokens, like a prompt; the block and everything after it share one noise level:
      they start as fresh uniform noise (t = 1), and every step moves all of them from tau_k to tau_{k+1} on
      linspace(1, 1e-5, steps + 1), the last step going straight to alpha_s = 1 (the noise removal folded into it;
      'greedy' takes the argmax there). At the end of its steps the block is committed; the positions after it are
      thrown away and re-drawn as uniform noise for the next block. block_size=1, steps=1: one call per token, left
      to right, each token drawn from q(z_s | z_t, p) at alpha_s = 1 with everything after it pure noise.
    """
    if noise_removal not in NOISE_REMOVALS:
        raise ValueError(f"noise_removal must be one of {NOISE_REMOVALS} for Duo, got {noise_removal!r}")
    decode.check_order(order, ('random',), 'Duo')
    decode.blocks(length, block_size)                                              # checks block_size
    steps, _ = noise.check_sampling_args(length, steps if block_size is None else (steps or block_size), None,
                                         model.cfg.mask_id)
    V = model.cfg.vocab_size
    device = next(model.parameters()).device
    given = decode.resolve_given(n, length, prompt, given, V, model.cfg.mask_id, device)
    fixed = given != decode.FREE                                                    # (n, L) bool
    x = torch.randint(0, V, (n, length), generator=generator, device=device)       # the prior: uniform on [0, V)
    x = torch.where(fixed, given, x)
    grid = noise.sampling_grid(steps)                                               # (steps + 1,) float64, 1 -> 1e-5
    greedy = noise_removal == 'greedy'
    if block_size is None:
        for k in range(steps + 1):        # `steps` ancestral steps, then the noise removal at t0 = tau_steps = 1e-5
            alpha_s = noise.alpha(grid[k + 1]) if k < steps else torch.ones((), dtype=torch.float64)
            x = _step(model, x, grid[k], alpha_s, temperature, top_p, generator, greedy and k == steps)
            x = torch.where(fixed, given, x)                                        # given tokens never change
            if callback is not None:
                callback(x)
        return x, steps + 1
    nfe = 0
    for start, end in decode.blocks(length, block_size):
        if fixed[:, start:end].all():
            continue                                                                # nothing to generate here
        if nfe:                                                                     # re-draw the block and after it
            noisy = torch.randint(0, V, (n, length - start), generator=generator, device=device)
            x = torch.cat([x[:, :start], noisy], dim=1)
            x = torch.where(fixed, given, x)
        for k in range(steps):
            last = k == steps - 1
            alpha_s = torch.ones((), dtype=torch.float64) if last else noise.alpha(grid[k + 1])
            z = _step(model, x, grid[k], alpha_s, temperature, top_p, generator, greedy and last)
            nfe += 1
            x = torch.cat([x[:, :start], z[:, start:]], dim=1)                      # the clean prefix stays
            x = torch.where(fixed, given, x)
            if callback is not None:
                callback(x)
    return x, nfe
