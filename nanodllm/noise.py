"""Noise schedule, time sampling and categorical sampling shared by the diffusion families (spec §0.2-0.5, §2.3).

- the log-linear schedule alpha_t = alpha0 (1 - (1 - eps) t), eps = 1e-3, and its derivative dalpha_t;
- antithetic (stratified) t over the *global* batch, sliced per rank and micro-step (spec §0.3, §9.9);
- the random draws of the forward processes (`uniform`, `randint`): from the global RNG in training, and from one
  generator per validation sequence (`RowNoise`) in evaluation, so a validation loss does not depend on the
  micro-batch size or the number of processes;
- the sampling time grid linspace(1, 1e-5, steps + 1) (spec §2.3);
- float64 exponential-race (Gumbel-max) categorical sampling and nucleus (top-p) filtering (spec §0.5), greedy at
  temperature 0;
- `given_mask`: the check of the conditional losses' `given` argument (issue 18).
"""
import hashlib

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


def _row_seed(seed, j):
    """A 32-bit seed hashed from (seed, j): the CPU generator (mt19937) keeps only the low 32 bits of a seed, so
    seed * 2**32 + j would give every seed the same streams."""
    return int.from_bytes(hashlib.blake2b(f'{seed},{j}'.encode(), digest_size=4).digest(), 'little')


class RowNoise:
    """The noise of a batch of validation sequences, one stream per sequence (pass it as a family's `generator`).

    Row i is validation sequence `index[i]` of `total`; its generator is seeded by (seed, index[i]), so sequence j
    sees the same t, masks and noise tokens whatever batch, micro-batch size or process it lands in. Its t is
    stratified over the whole validation set (`sample_t`): sequence j owns stratum strata[j] of a fixed random
    permutation of range(total) (a permutation, so that t does not grow with the position in the file). The paper
    stratifies each evaluation batch on its own (spec §0.3), which ties the estimate to the batch size.
    Slicing (`rows[:n]`) and `+` keep each row's own stream (Eso-LM splits a batch into two parts).
    """

    def __init__(self, index, total, seed, device='cpu'):
        index = [int(j) for j in index]
        if any(not 0 <= j < total for j in index):
            raise ValueError(f"row indices must lie in [0, {total}), got {index}")
        strata = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[index]
        self.generators = [torch.Generator(device).manual_seed(_row_seed(seed, j)) for j in index]
        self.strata, self.total = strata.double(), total                   # (B,), N

    @classmethod
    def _from(cls, generators, strata, total):
        rows = cls.__new__(cls)
        rows.generators, rows.strata, rows.total = generators, strata, total
        return rows

    def __len__(self):
        return len(self.generators)

    def __getitem__(self, rows):
        return RowNoise._from(self.generators[rows], self.strata[rows], self.total)

    def __add__(self, other):
        return RowNoise._from(self.generators + other.generators, torch.cat([self.strata, other.strata]), self.total)


def split_rows(generator, n):
    """(generator of rows [:n], generator of rows [n:]) for a family that splits its batch (Eso-LM). A RowNoise is
    split by rows; a plain generator (the training t stream) goes to the first part, the second part gets None."""
    return (generator[:n], generator[n:]) if isinstance(generator, RowNoise) else (generator, None)


def uniform(shape, device, generator=None):
    """U[0, 1) draws of shape (B, ...) for masks and orders: row i from generator.generators[i] if `generator` is
    a RowNoise (evaluation); otherwise from the global RNG, which differs per rank and is saved in checkpoints
    (training). A plain torch.Generator here is the t stream shared by all ranks: deliberately not used."""
    if isinstance(generator, RowNoise):
        return torch.stack([torch.rand(shape[1:], generator=g, device=device) for g in generator.generators])
    return torch.rand(shape, device=device)


def randint(high, shape, device, generator=None):
    """Integers uniform on [0, high) of shape (B, ...); the same RNG rules as `uniform`."""
    if isinstance(generator, RowNoise):
        return torch.stack([torch.randint(0, high, shape[1:], generator=g, device=device)
                            for g in generator.generators])
    return torch.randint(0, high, shape, device=device)


def given_mask(given, x0):
    """Check a loss's `given` argument -> None or a (B, L) bool tensor on x0's device, True = a given (prompt)
    position: clean, never corrupted, never scored, visible to attention (the conditional losses of every family)."""
    if given is None:
        return None
    if not torch.is_tensor(given) or given.dtype != torch.bool or given.shape != x0.shape:
        raise ValueError(f"given must be a bool tensor of x0's shape {tuple(x0.shape)} (True = prompt position), "
                         f"got {getattr(given, 'dtype', type(given).__name__)} {tuple(getattr(given, 'shape', ()))}")
    return given.to(x0.device)


def sample_t(n, k=0, K=1, generator=None, device='cpu'):
    """Antithetic t for rows [k n, (k + 1) n) of a global batch of n K rows -> (n,) float32 in [1e-3, 1].

    The global batch gets one u per stratum: u_i = (U_i + i) / (n K) with U_i ~ U[0, 1). Every micro-batch of every
    rank draws the same global U from a generator seeded identically (train.py seeds one per optimizer step) and
    keeps its own slice, so 1 process and N processes with accumulation cover the same strata (spec §0.3).
    With a RowNoise (evaluation), row i draws U_i from its own stream and takes its sequence's stratum of the whole
    validation set: u_i = (U_i + strata_i) / total (k and K are unused).
    """
    if isinstance(generator, RowNoise):
        if len(generator) != n:
            raise ValueError(f"RowNoise has {len(generator)} rows but the batch has {n}")
        U = torch.stack([torch.rand((), generator=g, dtype=torch.float64, device=g.device).cpu()
                         for g in generator.generators]) if n else torch.zeros(0, dtype=torch.float64)  # (n,)
        u = (U + generator.strata) / generator.total
        return ((1 - T_MIN) * u + T_MIN).float().to(device)
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
    if p.isnan().any():  # argmax would silently pick index 0 (NUL bytes): a NaN here means non-finite logits
        raise FloatingPointError("the sampling probabilities contain NaN: the model's outputs are not finite "
                                 "(corrupt or diverged weights?)")
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
    temperature=0 is greedy: p is the one-hot of the argmax (the first one on a tie), and every draw from it (the
    exponential race, or a posterior built on it) returns that token.
    """
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.size(-1)).double()
    logits = logits.double().masked_fill(logits <= NEG_INF, float('-inf')) / max(temperature, 1e-8)
    return top_p_filter(logits, top_p).softmax(dim=-1)


def check_sampling_args(length, steps, prompt, mask_id):
    """The checks every sampler makes -> (steps, P): steps defaults to length; the prompt (P,) must be shorter than
    the sample and hold clean token ids only (the samplers pass prompt=None: decode.resolve_given checks it, with
    `given`)."""
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
