"""Duo's Gaussian-to-discrete map and its Gumbel-softmax training curriculum (spec §3.5; the Duo paper, §3-4).

A Gaussian latent w = alpha~ onehot(x0) + sigma~ xi over the V ids, xi ~ N(0, I_V), with log-SNR gamma
(alpha~ = sqrt(sigmoid(-gamma)), sigma~ = sqrt(sigmoid(gamma)): variance preserving, SNR = e^-gamma), becomes a
uniform-state latent z = argmax(w): P(z = x0) = I(gamma), and any other id equally likely. So z is Duo's z_t with
  alpha_t = T(gamma_t) = (V I(gamma_t) - 1) / (V - 1),  I(gamma) = int phi(u - nu) Phi(u)^(V-1) du,  nu = e^(-gamma/2)
(the "Diffusion Transformation operator"). What this module owns:
- `integral` (direct quadrature of I and dI/dgamma) and `table` (tabulated on a gamma grid at start-up, ~0.1 s for
  V = 50258, cached in memory: nothing is written to disk); `lookup` clips gamma to the grid's range and
  interpolates linearly (the authors round to the nearest of 10^5 points; on our 10^4 points the linear
  interpolation is exact to ~1e-8, tests/test_curriculum.py);
- `matched_gamma_range`: the authors' gamma ranges are for GPT-2's vocabulary; for another V, train.py's default
  range gives the same alpha range (alpha depends on V: a deviation from taking their numbers literally);
- `schedule`: t -> gamma_t = gamma_min + t (gamma_max - gamma_min) -> alpha_t, dalpha_t/dt and sigma_t. dalpha_t is
  EXACT (the tabulated dI/dgamma, the authors' `grad_pt`), not their forward difference
  (gamma_max - gamma_min) 1000 (T(gamma + 1e-3) - T(gamma)) (which differs from it by O(1e-3) relative);
- `tau_inverse`: the temperature schedule 1/tau at a training step; `loss`: the curriculum's training loss, the
  Duo NELBO (duo.nelbo_per_token) of the HARD latent argmax(w) while the network sees the SOFT one softmax(w / tau);
- `Curriculum`: what train.py calls every step (`loss_at(step)`): the curriculum loss up to its end step, then the
  plain discrete Duo NELBO (duo.loss). Validation is always duo.loss.
Memory: the latent is B x L x V floats (nanodllm/memory.py counts the soft input kept for the backward).
"""
import functools
import math

import torch

from . import duo, noise

GAMMA_RANGE = (-3.5, -1.75)   # duo.yaml's gamma_min, gamma_max (LM1B; OWT: -3.55, -1.85) ...
V_AUTHORS = 50258             # ... for a vocabulary of GPT-2's size (matched_gamma_range carries them to another V)
TAU_LOG10 = (-1.0, -2.0)      # duo.yaml: log10 tau from -1 to -2 ...
STEPS_FRACTION = (0.1, 0.2)   # ... over steps 100k -> 200k of its 1M-step runs: 10% and 20% of the run here
GRID_POINTS = 10_001          # gamma grid of the table
_V_POINTS = 321               # quadrature nodes in v = u - nu on [-8, 8] (trapezoid; exact to ~1e-14 already)


def integral(gamma, V):
    """Direct quadrature -> (I(gamma), dI/dgamma), float64 tensors of gamma's shape (any gamma, any V >= 2).

    I(gamma) = int phi(v) Phi(v + nu)^(V-1) dv (v = u - nu) = P(argmax(nu e_x + xi) = x), nu = e^(-gamma/2);
    dI/dgamma = dI/dnu dnu/dgamma = int v phi(v) Phi(v + nu)^(V-1) dv (-nu / 2)  (d/dnu phi(u - nu) = (u-nu) phi).
    The trapezoid rule on [-8, 8]: the integrand is smooth and Gaussian-tailed, so it converges exponentially.
    Phi^(V-1) = exp((V-1) log Phi) with torch's log_ndtr (numpy has no erf; no scipy), in float64.
    """
    gamma = torch.as_tensor(gamma, dtype=torch.float64)
    v = torch.linspace(-8, 8, _V_POINTS, dtype=torch.float64)                      # (n,)
    w = torch.full_like(v, float(v[1] - v[0]))
    w[0] = w[-1] = w[0] / 2                                                         # trapezoid weights
    phi = torch.exp(-v ** 2 / 2) / math.sqrt(2 * math.pi)                           # (n,)
    I, dI = [], []
    for g in gamma.reshape(-1).split(4096):                                         # (G,) chunks: G x n floats
        nu = torch.exp(-g / 2)[:, None]                                             # (G, 1)
        f = phi * torch.exp((V - 1) * torch.special.log_ndtr(v + nu)) * w           # (G, n)
        I.append(f.sum(-1))
        dI.append((f * v).sum(-1) * (-nu[:, 0] / 2))
    return torch.cat(I).reshape(gamma.shape), torch.cat(dI).reshape(gamma.shape)


_TABLES = {}  # (V, gamma_min, gamma_max, n) -> table: computed once per process


def table(V, gamma_min, gamma_max, n=GRID_POINTS):
    """(gamma grid (n,), I (n,), dI/dgamma (n,)) float64 on linspace(gamma_min, gamma_max, n), once per setting."""
    key = (V, float(gamma_min), float(gamma_max), n)
    if key not in _TABLES:
        if not gamma_min < gamma_max:
            raise ValueError(f"the gamma range needs gamma_min < gamma_max, got [{gamma_min}, {gamma_max}]")
        grid = torch.linspace(gamma_min, gamma_max, n, dtype=torch.float64)
        _TABLES[key] = (grid, *integral(grid, V))
    return _TABLES[key]


def lookup(tab, gamma):
    """(I, dI/dgamma) at gamma (any shape), clipped to the table's range, linearly interpolated (float64)."""
    grid, I, dI = tab
    g = torch.as_tensor(gamma, dtype=torch.float64).clamp(grid[0], grid[-1])
    pos = (g - grid[0]) / (grid[1] - grid[0])                                       # fractional grid index
    i = pos.floor().long().clamp(max=len(grid) - 2)
    frac = pos - i
    return I[i] + frac * (I[i + 1] - I[i]), dI[i] + frac * (dI[i + 1] - dI[i])


def transform(I, V):
    """The Diffusion Transformation operator: T = (V I - 1) / (V - 1), Duo's alpha for P(argmax w = x0) = I."""
    return (V * I - 1) / (V - 1)


def matched_gamma_range(V, gamma_range=GAMMA_RANGE, V_ref=V_AUTHORS):
    """The gamma range that gives a vocabulary of V ids the same alpha range as `gamma_range` gives V_ref ids:
    alpha = T_V(gamma) is vocabulary-dependent (V = 257: the authors' [-3.5, -1.75] covers only alpha in
    [0.34, 0.996], never the noisy end), so train.py's default is (T_V)^-1(T_Vref(gamma_authors)), by bisection.
    With V = V_ref it returns gamma_range itself."""
    if V == V_ref:
        return tuple(gamma_range)
    out = []
    for g in gamma_range:
        target = transform(integral(torch.tensor(float(g)), V_ref)[0], V_ref).item()
        lo, hi = -20.0, 10.0                                                        # T_V(lo) ~ 1 > target > T_V(hi)
        for _ in range(60):
            mid = (lo + hi) / 2
            if transform(integral(torch.tensor(mid), V)[0], V).item() > target:
                lo = mid
            else:
                hi = mid
        out.append(round((lo + hi) / 2, 6))
    return tuple(out)


def schedule(t, V, gamma_range=GAMMA_RANGE):
    """t (B,) -> gamma_t, alpha_t = T(gamma_t), dalpha_t = d alpha_t / dt (exact), sigma_t = -log alpha_t; (B,) each,
    on the CPU (where the table is; callers move them), gamma, alpha and dalpha in float64, sigma in float32."""
    gamma_min, gamma_max = gamma_range
    gamma = gamma_min + t.detach().double().cpu() * (gamma_max - gamma_min)         # (B,) linear in t
    I, dI = lookup(table(V, float(gamma_min), float(gamma_max)), gamma)
    alpha_t = transform(I, V)
    dalpha_t = V / (V - 1) * dI * (gamma_max - gamma_min)                           # chain rule, < 0
    return gamma, alpha_t, dalpha_t, (-torch.log(alpha_t)).float()


def latent(x0, gamma, V, xi=None):
    """w = alpha~ onehot(x0) + sigma~ xi -> (B, L, V) float32; gamma (B,) or (B, L); xi ~ N(0, I) from the global
    RNG unless given (DCD passes one xi to two gammas)."""
    if xi is None:
        xi = torch.randn(*x0.shape, V, device=x0.device)                             # (B, L, V)
    gamma = gamma.reshape(gamma.shape + (1,) * (x0.dim() + 1 - gamma.dim())).to(xi.device)
    alpha_tilde = torch.sigmoid(-gamma).sqrt().float()                              # (B, 1, 1)
    sigma_tilde = torch.sigmoid(gamma).sqrt().float()
    return (sigma_tilde * xi).scatter_add_(-1, x0[..., None], alpha_tilde.expand(*x0.shape, 1))  # (B, L, V)


def tau_inverse(step, start, end, tau_log10=TAU_LOG10):
    """1/tau at a training step (the authors' `_compute_gumbel_tau_inverse`): log10 tau = tau_log10[0] before
    `start`, linear to tau_log10[1] from `start` to `end`, and -10 (1/tau = 1e10: the soft input is one-hot) from
    `end` on (used at step == end only: after it the loss is the discrete NELBO)."""
    log_start, log_end = tau_log10
    if step < start:
        log_tau = log_start
    elif step < end:
        log_tau = log_start + (step - start) / (end - start) * (log_end - log_start)
    else:
        log_tau = -10.0
    return 10.0 ** -log_tau


def nelbo_of_latent(model, x0, w, tau_inv, alpha_t, dalpha_t, sigma_t):
    """Duo NELBO per token (B, L) of the hard latent z = argmax(w), the network seeing softmax(w / tau) (B, L, V)."""
    zt = w.argmax(dim=-1)                                                           # (B, L) the hard latent
    soft = (w * tau_inv).softmax(dim=-1)                                            # (B, L, V) the soft input
    del w
    logits = model(soft, sigma=sigma_t, attn='full')                                # (B, L, V) fp32
    return duo.nelbo_per_token(logits, x0, zt, alpha_t[:, None].float(), dalpha_t[:, None].float())


def loss(model, x0, train=True, strata=(0, 1), generator=None, given=None, tau_inv=1.0, gamma_range=GAMMA_RANGE):
    """The curriculum's training loss (spec §3.5): x0 (B, L) -> (sum of the Duo NELBO over B L positions, B L).

    t antithetic as duo.loss (the same draws from `generator`), gamma_t linear in t, alpha_t = T(gamma_t) with its
    exact derivative, sigma_t = -log alpha_t for adaLN; w over B x L x V (the global RNG); the network sees
    softmax(w tau_inv), the NELBO scores z = argmax(w). Training only (validation is duo.loss)."""
    if given is not None:
        raise ValueError("the Duo curriculum trains unconditionally: drop --curriculum for conditional training")
    B, L = x0.shape
    V = model.cfg.vocab_size
    t = noise.sample_t(B, *strata, generator=generator, device=x0.device)           # (B,) in [1e-3, 1]
    gamma, alpha_t, dalpha_t, sigma_t = schedule(t, V, gamma_range)
    w = latent(x0, gamma, V)                                                        # (B, L, V)
    nll = nelbo_of_latent(model, x0, w, tau_inv, alpha_t.to(x0.device), dalpha_t.to(x0.device), sigma_t.to(x0.device))
    return nll.sum(), B * L


class Curriculum:
    """train.py's objective for `--curriculum`: `loss_at(step)` is a loss with duo.loss's signature."""

    def __init__(self, max_steps, V, steps=None, tau_log10=None, gamma_range=None):
        self.start, self.end = steps or [round(f * max_steps) for f in STEPS_FRACTION]
        if not 0 <= self.start <= self.end:
            raise ValueError(f"--curriculum-steps {self.start} {self.end}: need 0 <= START <= END")
        self.tau_log10 = tuple(tau_log10 or TAU_LOG10)
        self.gamma_range = tuple(gamma_range or matched_gamma_range(V))
        if not self.gamma_range[0] < self.gamma_range[1]:
            raise ValueError(f"--gamma {self.gamma_range[0]:g} {self.gamma_range[1]:g}: need MIN < MAX")

    def describe(self, max_steps):
        return (f"Duo curriculum (spec §3.5): steps 0-{self.end} on the Gumbel-softmax latent, gamma in "
                f"[{self.gamma_range[0]:g}, {self.gamma_range[1]:g}], log10 tau {self.tau_log10[0]:g} until step "
                f"{self.start}, then to {self.tau_log10[1]:g} at step {self.end}; the discrete NELBO after it")

    def loss_at(self, step):
        if step > self.end:
            return duo.loss
        return functools.partial(loss, tau_inv=tau_inverse(step, self.start, self.end, self.tau_log10),
                                 gamma_range=self.gamma_range)

    def resume(self, step):
        pass                                   # the schedule is a function of the step: nothing to restore

    def state(self, step):
        return {}
