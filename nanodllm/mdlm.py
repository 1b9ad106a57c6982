"""MDLM: masked (absorbing-state) diffusion (spec §2): corrupt by masking, predict the clean tokens, unmask to sample.

The surface every family shares: `OPTIONS`, `loss(model, x0, ...) -> (nll_sum, n_tokens)` and
`sample(model, n, length, ...) -> (x, nfe)`. How MDLM differs from AR (spec §1):
- attention is bidirectional ('full') and all L positions are scored, not L-1 shifted ones;
- a time t ~ U[1e-3, 1] per sequence masks each token with probability 1 - alpha_t (log-linear schedule, spec §0.2);
  the network still gets sigma = 0 (no time conditioning, spec §0.4), so it must infer t from the masks;
- the loss counts masked positions only ("carry-over", spec §2.2); training uses the low-variance cross-entropy
  (the NELBO without its 1/t weight), evaluation always the NELBO; both are divided by ALL B L tokens;
- sampling starts from all masks and unmasks over `steps` steps of the ancestral posterior (spec §2.3); a decoded
  token is never changed again.
Conditioning (`given`, issue 18): given positions are never masked nor scored in the loss and start clean in the
sampler; `order` ('confidence', 'margin') and `block_size` switch the sampler to commit-k decoding (LLaDA/dllm).
"""
import torch
import torch.nn.functional as F

from . import decode, noise

OPTIONS = {'loss_type': 'low_var'}   # 'low_var' (the paper's scaling runs) or 'elbo' (the NELBO, also in training)
TIME_CONDITIONING = False            # sigma = 0: adaLN gives a constant, learned modulation (spec §0.4)
LOSS_TYPES = ('low_var', 'elbo')
NOISE_REMOVALS = ('ancestral', 'greedy', 'none')


def corrupt(x0, alpha_t, mask_id, generator=None, given=None):
    """Absorbing forward process q(z_t | x0) = alpha_t onehot(x0) + (1 - alpha_t) onehot(m) (spec §2.1).

    x0 (B, L) long, alpha_t (B, 1): one t per sequence -> xt (B, L), each token independently replaced by the mask
    id with probability 1 - alpha_t. Draws from the global RNG, or per row from a noise.RowNoise `generator`.
    given: None or (B, L) bool: those positions stay clean (the uniform draws are made for every position all the
    same, so the random stream does not depend on `given`).
    """
    masked = noise.uniform(x0.shape, x0.device, generator) < 1 - alpha_t            # (B, L) bool
    if given is not None:
        masked = masked & ~given                                                     # prompt positions stay clean
    return x0.masked_fill(masked, mask_id)


def nelbo_weight(t, alpha0=1.0):
    """The NELBO weight -alpha'_t / (1 - alpha_t) (spec §2.2); with alpha0 = 1 it is exactly 1 / t (spec §0.2)."""
    return -noise.dalpha(t, alpha0) / (1 - noise.alpha(t, alpha0))


def nll_per_token(model, x0, t, elbo=True, generator=None, given=None):
    """Per-token loss (B, L) and the noisy input xt (B, L) for clean x0 (B, L) at times t (B,) (spec §2.2).

    l_i = -log p_theta(x0_i | xt) at masked positions and exactly 0 at unmasked ones (carry-over); with elbo=True
    it is multiplied by the NELBO weight 1/t, otherwise it is the low-variance cross-entropy. Positions marked in
    `given` (B, L) bool are never masked, so their term is exactly 0 by the same carry-over rule.
    """
    mask_id = model.cfg.mask_id
    alpha_t = noise.alpha(t)[:, None]                                                # (B, 1)
    xt = corrupt(x0, alpha_t, mask_id, generator, given)                             # (B, L)
    logits = model(xt, attn='full')                                                  # (B, L, V) fp32, mask = -1e6
    ce = F.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction='none').view(x0.shape)  # (B, L)
    nll = torch.where(xt == mask_id, ce, torch.zeros_like(ce))                       # carry-over: unmasked -> 0
    if elbo:
        nll = nll * nelbo_weight(t)[:, None]                                         # (B, L) times 1/t
    return nll, xt


def loss(model, x0, train=True, strata=(0, 1), generator=None, loss_type='low_var', given=None):
    """x0 (B, L) -> (sum of the per-token loss over all B L positions, B L) (spec §2.2, §7.1); with `given`, over
    the not-given positions (the given ones contribute exactly 0).

    train=True uses `loss_type`: 'low_var' drops the NELBO weight (the paper's cheaper training objective), 'elbo'
    keeps it. train=False (evaluation) is always the NELBO. Both are normalised by all B L tokens, not by the masked
    ones (spec §9.4), so a low-var training loss sits near half the NELBO and is not a perplexity.
    t is antithetic over the global batch: this micro-batch is slice `strata` = (k, K) (spec §0.3).
    given: None or (B, L) bool, True = a given (prompt) position (conditional training, sft.md §2): it is never
      masked (each response position is masked with probability 1 - alpha_t, the same t per row), so it is never
      scored and stays visible to the bidirectional attention; the weight is the same (NELBO 1/t, or low-var).
      n_tokens is then a (0-d, long) tensor: the number of not-given positions (response + EOS padding, "token"
      normalisation). given=None (or all False) returns exactly the unconditional loss, with the same random draws.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    given = noise.given_mask(given, x0)
    B, L = x0.shape
    t = noise.sample_t(B, *strata, generator=generator, device=x0.device)           # (B,) in [1e-3, 1]
    nll, _ = nll_per_token(model, x0, t, elbo=(not train or loss_type == 'elbo'), generator=generator, given=given)
    return nll.sum(), B * L if given is None else (~given).sum()


def _probs(model, x, temperature, top_p):
    """Network call on the current state x (n, L) -> float64 probabilities p (n, L, V), p[mask] = 0 exactly."""
    return noise.probs_from_logits(model(x, attn='full'), temperature, top_p)      # (n, L, V) float64


@torch.no_grad()
def sample(model, n, length, steps=None, prompt=None, temperature=1.0, top_p=1.0, generator=None, callback=None,
           noise_removal='ancestral', use_cache=True, given=None, order='random', block_size=None):
    """Ancestral sampling from all masks (spec §2.3) -> (x (n, length) long, nfe = number of network calls).

    Step k goes from t = tau_k to s = tau_{k+1} on the grid linspace(1, 1e-5, steps + 1) (steps default: length).
    A masked position draws z_s from q(z_s = j | z_t = m) ∝ (alpha_s - alpha_t) p_j for j != m and ∝ (1 - alpha_s)
    for j = m (stay masked); decoded and prompt tokens are copied. Temperature and top-p are applied to the logits
    before the posterior; temperature=0 makes p the one-hot argmax (greedy tokens, the unmasking times stay random).
    The paper's code ignores p_nucleus for MDLM (spec §9.16); we apply it, as the Eso-LM repo does, so top_p=1.0
    reproduces the paper.
    use_cache: if a step unmasked nothing, reuse the previous p instead of calling the network ('ancestral_cache').
      Exact, because sigma = 0 makes the network input identical. The random draws happen every step in both modes,
      so the cached and uncached samplers return the same samples for the same generator.
    noise_removal (one more network call at t = 1e-5, unless cached):
      'ancestral': alpha_s = 1, every remaining mask is filled by sampling from p;
      'greedy': argmax of p at the still-masked positions only. The paper's greedy argmaxes every position and can
        overwrite decoded tokens (spec §9.5); we deliberately keep them (carry-over);
      'none': return the state as is; it may still contain mask ids (rarely: the last step already goes to
        t = 1e-5, where a mask stays with probability 1e-5 / t).
    callback(x) is called after every step, and once more after the noise removal.

    given (n, length) long, decode.FREE = free (or `prompt`, the same prefix for every row): fixed tokens at any
    positions (prefix, infill gaps, any mask), clean from the start and never changed (the carry-over copies them).
    order / block_size (sft.md §3): with order 'confidence' or 'margin', or any block_size, the sampler commits a
    fixed number of positions per network call instead (`_sample_committed`); noise_removal and use_cache are not
    used there (every free position is committed by the last step, and every step changes the input).
    """
    if noise_removal not in NOISE_REMOVALS:
        raise ValueError(f"noise_removal must be one of {NOISE_REMOVALS}, got {noise_removal!r}")
    decode.check_order(order, decode.ORDERS, 'MDLM')
    decode.blocks(length, block_size)                                              # checks block_size
    mask_id = model.cfg.mask_id
    steps, _ = noise.check_sampling_args(length, steps if block_size is None else (steps or block_size), None,
                                         mask_id)
    device = next(model.parameters()).device
    given = decode.resolve_given(n, length, prompt, given, model.cfg.vocab_size, mask_id, device)
    x = torch.where(given == decode.FREE, mask_id, given)                          # the prior: masks, given tokens
    if order != 'random' or block_size is not None:
        return _sample_committed(model, x, steps, temperature, top_p, generator, callback, order, block_size)
    grid = noise.sampling_grid(steps).tolist()                                      # steps + 1 times, 1 -> 1e-5
    nfe, p = 0, None
    for k in range(steps):
        if p is None or not use_cache:
            p = _probs(model, x, temperature, top_p)                                # (n, L, V) float64
            nfe += 1
        alpha_t, alpha_s = noise.alpha(grid[k]), noise.alpha(grid[k + 1])
        q = p * (alpha_s - alpha_t)                                                 # (n, L, V) unnormalised posterior
        q[..., mask_id] = 1 - alpha_s                                               # stay masked
        z_s = noise.sample_categorical(q, generator)                                # (n, L), drawn every step
        x_next = torch.where(x == mask_id, z_s, x)                                  # copy decoded / given tokens
        if not torch.equal(x_next, x):
            p = None                                                                # the input changed: call again
        x = x_next
        if callback is not None:
            callback(x)
    if noise_removal == 'none':
        return x, nfe
    if p is None or not use_cache:
        p = _probs(model, x, temperature, top_p)
        nfe += 1
    if noise_removal == 'ancestral':
        z_0 = noise.sample_categorical(p, generator)    # alpha_s = 1: q ∝ (1 - alpha_t) p, q_m = 0, i.e. just p
    else:
        z_0 = p.argmax(dim=-1)                          # greedy (argmax of p = argmax of the logits)
    x = torch.where(x == mask_id, z_0, x)               # (n, L): only still-masked positions change
    if callback is not None:
        callback(x)
    return x, nfe


def _sample_committed(model, x, steps, temperature, top_p, generator, callback, order, block_size):
    """Commit-k decoding (LLaDA/dllm's sampler, sft.md §3) from x (n, L) with masks at the free positions.

    The blocks of `block_size` (one block if None) are decoded left to right, `steps` steps each. In a block, step
    s commits k_s free positions of each row (decode.split_counts: the row's free positions of the block spread
    evenly over the steps): one network call on the current state, the token of every position drawn from p
    (temperature, top-p; argmax at temperature 0), and per row the k_s free positions of the block ranked first by
    `order` keep their draw: 'confidence' (top probability of softmax(logits)), 'margin' (top1 - top2), or 'random'
    (uniform: random-order unmasking with this fixed count schedule, instead of the ancestral binomial counts).
    Positions after the block stay masked (the model sees them as masks). A step that commits nothing in any row
    makes no call. block_size=1, steps=1: left to right, one token per call. -> (x, nfe)
    """
    mask_id, L = model.cfg.mask_id, x.size(1)
    nfe = 0
    for start, end in decode.blocks(L, block_size):
        in_block = torch.zeros(L, dtype=torch.bool, device=x.device)
        in_block[start:end] = True
        free = (x == mask_id) & in_block                                            # (n, L)
        for k in decode.split_counts(free.sum(dim=1), steps):                       # k (n,) per step
            if not k.any():
                continue
            logits = model(x, attn='full')                                          # (n, L, V)
            nfe += 1
            tokens = noise.sample_categorical(noise.probs_from_logits(logits, temperature, top_p), generator)
            commit = decode.select(decode.scores(logits, order, generator), free, k)    # (n, L) bool, per row
            x = torch.where(commit, tokens, x)
            free &= ~commit
            if callback is not None:
                callback(x)
    return x, nfe
