"""Noise schedule, time sampling and categorical sampling shared by the diffusion families (spec §0.2-0.5, §2.3).

- the log-linear schedule alpha_t = alpha0 (1 - (1 - eps) t), eps = 1e-3, and its derivative dalpha_t;
- antithetic (stratified) t over the *global* batch, sliced per rank and micro-step (spec §0.3, §9.9);
- the sampling time grid linspace(1, 1e-5, steps + 1) (spec §2.3);
- float64 exponential-race (Gumbel-max) categorical sampling and nucleus (top-p) filtering (spec §0.5).
"""
import torch

from .model import NEG_INF

EPS = 1e-3        # alpha(1) = alpha0 * EPS: never exactly all-noise (hard-coded in the paper's code)
T_MIN = 1e-3      # training t lies in [T_MIN, 1]
T_END = 1e-5      # the sampling grid stops here; the last network call is the noise-removal step


def alpha(t, alpha0=1.0):
    """alpha_t = alpha0 * (1 - (1 - eps) t): the probability that a token is still clean at time t."""
    return alpha0 * (1 - (1 - EPS) * t)


def dalpha(t, alpha0=1.0):
    """dalpha_t = d alpha_t / dt = -alpha0 (1 - eps), a constant (same shape as t)."""
    return torch.full_like(t, -alpha0 * (1 - EPS)) if torch.is_tensor(t) else -alpha0 * (1 - EPS)


def sample_t(n, k=0, K=1, generator=None, device='cpu'):
    """Antithetic t for rows [k n, (k + 1) n) of a global batch of n K rows -> (n,) float32 in [1e-3, 1].

    The global batch gets one u per stratum: u_i = (U_i + i) / (n K) with U_i ~ U[0, 1). Every micro-batch of every
    rank draws the same global U from a generator seeded identically (train.py seeds one per optimizer step) and
    keeps its own slice, so 1 process and N processes with accumulation cover the same strata (spec §0.3).
    """
    N = n * K
    U = torch.rand(N, generator=generator, dtype=torch.float64)
    u = (U + torch.arange(N, dtype=torch.float64)) / N          # one draw per stratum [i/N, (i+1)/N)
    t = (1 - T_MIN) * u + T_MIN
    return t[k * n:(k + 1) * n].float().to(device)


def sampling_grid(steps):
    """Sampling times tau_0 = 1 > tau_1 > ... > tau_steps = 1e-5 (spec §2.3): step k goes from tau_k to tau_{k+1}."""
    return torch.linspace(1.0, T_END, steps + 1, dtype=torch.float64)


def sample_categorical(p, generator=None):
    """Exponential race: argmax_j p_j / E_j, E_j ~ Exp(1), in float64 (spec §0.5). p (..., V) >= 0, unnormalised ok.

    Equivalent to Gumbel-max on log p; float32 noise is known to lower sample entropy, so keep float64.
    """
    p = p.double()
    U = torch.rand(p.shape, generator=generator, dtype=torch.float64, device=p.device)
    E = 1e-10 - torch.log(U + 1e-10)
    return (p / E).argmax(dim=-1)


def top_p_filter(logits, top_p):
    """Nucleus filtering (spec §0.5): keep the smallest set of tokens whose mass reaches top_p (always the top-1).

    logits (..., V) -> same shape, dropped entries set to -inf so their probability is exactly 0 after softmax.
    (Sampling only: losses never see these logits, so -inf cannot leak into a gradient.)
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs                   # mass of the tokens ranked above each one
    drop_sorted = mass_before > top_p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float('-inf'))


def probs_from_logits(logits, temperature=1.0, top_p=1.0):
    """Model logits (..., V) -> float64 sampling probabilities with temperature and top-p.

    The mask logit (-1e6) becomes -inf before the temperature, so its probability is exactly 0 at any temperature.
    """
    logits = logits.double().masked_fill(logits <= NEG_INF, float('-inf')) / max(temperature, 1e-8)
    return top_p_filter(logits, top_p).softmax(dim=-1)


def check_sampling_args(length, steps, prompt, mask_id):
    """The checks every sampler makes -> (steps, P): steps defaults to length; the prompt (P,) must be shorter than
    the sample and hold clean token ids only."""
    steps = length if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    P = 0 if prompt is None else len(prompt)
    if P >= length:
        raise ValueError(f"prompt has {P} tokens but the sample length is {length}: use a shorter prompt or a "
                         f"larger --length")
    if P and (prompt == mask_id).any():
        raise ValueError(f"prompt contains the mask id {mask_id}: pass clean token ids only")
    return steps, P
