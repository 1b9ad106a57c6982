"""Eso-LM: interpolating diffusion, MDLM with a causal clean-first transformer plus an optional AR part (spec §4).

Two parts share the backbone, selected by alpha0 in alpha_t = alpha0 (1 - (1 - eps) t) (spec §4.1):
- diffusion (alpha0 > 0): MDLM masking at a random t; each row is sorted clean-first (random order inside both groups)
  and run with a plain *causal* attention over the sorted tokens, rotary positions permuted along (spec §4.2-4.3);
- sequential (alpha0 < 1): the fraction 1 - alpha0 that is still masked at t = 0 is decoded left to right, trained
  with the 2L-token block-size-1 mask of `sequential_mask` (spec §4.4). alpha0 = 0 is exactly AR.
The sampler unmasks a binomial number of tokens per step in a random order, then the sequential tail one token per
call, and caches the keys of clean tokens (spec §4.6), so a step only runs the newly clean and the new mask rows.

How it differs from AR (`ar.py`): it draws t and masks tokens (no shift: all L positions are scored), attends causally
over a *permuted* order (the `pos` argument carries the original positions), and feeds sigma = 0 like AR.
Conditioning (`given`, issue 18): given tokens are clean, so they sort first in both parts of the loss and in the
sampler; the sampler also decodes by confidence / margin (greedily, KV cache kept) and in semi-AR blocks.
"""
import torch
import torch.nn.functional as F

from . import decode, mdlm, noise

OPTIONS = {'loss_type': 'low_var', 'alpha0': 1.0, 'batch_split': 1.0}
TIME_CONDITIONING = False   # sigma = 0 in both parts and in sampling (spec §4.1)


def _check_options(loss_type, alpha0, batch_split):
    if loss_type not in ('low_var', 'elbo'):
        raise ValueError(f"loss_type must be 'low_var' or 'elbo', got {loss_type!r}")
    if not 0.0 <= alpha0 <= 1.0:
        raise ValueError(f"alpha0 must lie in [0, 1] (1 = pure diffusion, 0 = AR), got {alpha0}")
    if not 0.0 <= batch_split <= 1.0:
        raise ValueError(f"batch_split (fraction of rows for the diffusion part) must lie in [0, 1], got {batch_split}")


def sequential_mask(L, device='cpu'):
    """The (2L, 2L) attention mask of the sequential part (spec §4.4), True = may attend; input = [z0 ; x0], sorted.

    q < L,  k < L:  k == q          (a z0 slot sees only itself)
    q < L,  k >= L: k - L < q       (... and the clean x0 tokens at earlier sorted slots)
    q >= L, k >= L: k - L <= q - L  (the x0 copy is causal among itself)
    q >= L, k < L:  never
    Eager mode applies it densely (SDPA). Under torch.compile the model turns it into a flex_attention block mask that
    skips the blocks it empties: about 2/3 of the (2L, 2L) score blocks at L = 1024, 3/4 as L grows.
    """
    q = torch.arange(2 * L, device=device)[:, None]
    k = torch.arange(2 * L, device=device)[None, :]
    top = (q < L) & (((k < L) & (k == q)) | ((k >= L) & (k - L < q)))
    bottom = (q >= L) & (k >= L) & (k <= q)
    return top | bottom                                                          # (2L, 2L)


def _masked_nll(logits, targets, is_masked):
    """-log p(target) at masked slots, 0 elsewhere (carry-over, spec §2.2) -> (B, L). cross_entropy log-softmaxes the
    fp32 logits before gathering (spec §9.3; the paper's sequential loss gathers raw logits, §4.4.5). The unmasked
    slots get the ignore index (-100): no boolean indexing, so no host-device sync."""
    ignored = targets.masked_fill(~is_masked, -100)                             # (B, L)
    return F.cross_entropy(logits.flatten(0, 1), ignored.flatten(), reduction='none').view(targets.shape)


def _diffusion_nll(model, x0, train, strata, generator, loss_type, alpha0, given=None):
    """Diffusion part (spec §4.2-4.3) on x0 (n, L) -> summed per-token loss (scalar). given (n, L) bool or None:
    those positions are never masked and are sorted first, before the clean response tokens."""
    n, L = x0.shape
    mask_id = model.cfg.mask_id
    # t: stratified over the n K diffusion rows of the global batch (the paper: floor(global_batch * batch_split))
    t = noise.sample_t(n, *strata, generator=generator, device=x0.device)      # (n,)
    alpha_t = noise.alpha(t, alpha0)[:, None]                                   # (n, 1)
    zt = mdlm.corrupt(x0, alpha_t, mask_id, generator, given)                   # (n, L) MDLM masking
    # clean first, random order inside each group: key = 1[masked] + 0.9 U (spec §4.2, §9.11); given positions
    # get key - 1 < 0, so they come before the clean response tokens (the same U draws either way)
    key = (zt == mask_id).float() + 0.9 * noise.uniform(zt.shape, x0.device, generator)
    if given is not None:
        key = key - given.float()
    sort_idx = key.argsort(dim=1)                                               # (n, L) original position per slot
    zt, x0 = zt.gather(1, sort_idx), x0.gather(1, sort_idx)                     # sorted coordinates
    logits = model(zt, attn='causal', pos=sort_idx)                             # (n, L, V)
    nll = _masked_nll(logits, x0, zt == mask_id)                                # (n, L)
    if train and loss_type == 'low_var':
        return nll.sum()                                                        # low-var: plain CE (spec §2.2)
    return (mdlm.nelbo_weight(t, alpha0)[:, None] * nll).sum()                  # weight alpha0(1-eps)/(1-alpha_t)


def _sequential_nll(model, x0, alpha0, generator=None, given=None):
    """Sequential part (spec §4.4) on x0 (n, L) -> summed -log p(x0) at the slots masked in z0 (scalar).
    Needs no t; at alpha0 = 0 every token is masked, the order is the identity, and this is the exact L-token NLL.
    given (n, L) bool or None: never masked in z0, sorted first (before the clean response tokens)."""
    n, L = x0.shape
    mask_id = model.cfg.mask_id
    z0 = mdlm.corrupt(x0, alpha0, mask_id, generator, given)                    # (n, L)
    masked = z0 == mask_id
    # clean first in random order, then the masks left to right (key in [1, 2) increasing with position); given
    # positions first of all (key in [-1, -0.1))
    ramp = torch.arange(L, device=x0.device) / L
    clean_key = 0.9 * noise.uniform(z0.shape, x0.device, generator)
    if given is not None:
        clean_key = clean_key - given.float()
    key = torch.where(masked, 1 + ramp, clean_key)
    sort_idx = key.argsort(dim=1)                                               # (n, L)
    z0, x0 = z0.gather(1, sort_idx), x0.gather(1, sort_idx)
    inp = torch.cat([z0, x0], dim=1)                                            # (n, 2L): [z0 ; x0]
    pos = torch.cat([sort_idx, sort_idx], dim=1)                                # (n, 2L)
    logits = model(inp, attn=sequential_mask(L, x0.device), pos=pos, rows=slice(0, L))  # (n, L, V): the z0 half
    return _masked_nll(logits, x0, z0 == mask_id).sum()


def loss(model, x0, train=True, strata=(0, 1), generator=None, loss_type='low_var', alpha0=1.0, batch_split=1.0,
         given=None):
    """Eso-LM loss (spec §4.1-4.4): x0 (B, L) -> (nll_sum, n_tokens).

    The first floor(batch_split B) rows go to the diffusion part, the rest to the sequential part. alpha0 = 1 puts
    every row into diffusion (no sequential part); alpha0 = 0 puts every row into the sequential part (exact AR NLL,
    deterministic: no t, no random order). With both parts active the per-token loss is the unbiased NELBO
    seq_sum / seq_tokens + diff_sum / diff_tokens (spec §4.4.6); like the paper we return
    (that per-token loss * diff_tokens, diff_tokens), so nll_sum / n_tokens is the total per-token loss and the
    token count is the diffusion one. A torch.Generator `generator` is used only for the t draws (masks and orders
    come from the global RNG); a noise.RowNoise (evaluation) gives every row its own t, masks and order.

    given: None or (B, L) bool, True = a given (prompt) position (conditional training, sft.md §2). Given positions
    are never masked, hence never scored, and come FIRST in the clean-first order of both parts (before the clean
    response tokens, in random order among themselves), so every response token attends to the whole prompt.
    - diffusion part: response positions are masked with probability 1 - alpha_t and scored as usual;
    - sequential part (alpha0 < 1): z0 masks response positions only, each with probability 1 - alpha0; the order
      is [prompt ; clean response tokens (random order) ; masked response tokens left to right], and the masked
      ones are scored. At alpha0 = 0 every response token is masked: the loss is then exactly the AR NLL of the
      response given the prompt, left to right (the response's first token is scored too: it sees the prompt).
    Token counts (and so the normalisation of each part) are the not-given positions: response + EOS padding
    ("token" normalisation); n_tokens is then a (0-d, long) tensor. given=None (or all False) returns exactly the
    unconditional loss, with the same random draws.
    """
    _check_options(loss_type, alpha0, batch_split)
    given = noise.given_mask(given, x0)
    B, L = x0.shape
    if alpha0 == 1.0:
        n_diff = B
    elif alpha0 == 0.0:
        n_diff = 0
    else:
        n_diff = int(batch_split * B)
        if n_diff == 0 or n_diff == B:
            raise ValueError(f"alpha0 = {alpha0} needs both a diffusion and a sequential sub-batch, but batch_split = "
                             f"{batch_split} of {B} rows gives {n_diff} diffusion rows: pick batch_split in (0, 1) "
                             f"with 0 < floor(batch_split * B) < B")
    g_diff = g_seq = None if given is None else given                           # (rows, L) per part, below
    if n_diff == B:
        n_tokens = B * L if given is None else (~given).sum()
        return _diffusion_nll(model, x0, train, strata, generator, loss_type, alpha0, g_diff), n_tokens
    if n_diff == 0:
        n_tokens = B * L if given is None else (~given).sum()
        return _sequential_nll(model, x0, alpha0, generator, g_seq), n_tokens
    if given is None:
        diff_tokens, seq_tokens = n_diff * L, (B - n_diff) * L
    else:
        g_diff, g_seq = given[:n_diff], given[n_diff:]
        # a part whose rows are all given scores nothing: its sum is 0, divided by 1 instead of 0
        diff_tokens, seq_tokens = (~g_diff).sum(), (~g_seq).sum().clamp(min=1)
    r_diff, r_seq = noise.split_rows(generator, n_diff)        # evaluation: every row keeps its own noise stream
    per_token = (_diffusion_nll(model, x0[:n_diff], train, strata, r_diff, loss_type, alpha0, g_diff)
                 / (diff_tokens if given is None else diff_tokens.clamp(min=1))
                 + _sequential_nll(model, x0[n_diff:], alpha0, r_seq, g_seq) / seq_tokens)
    return per_token * diff_tokens, diff_tokens


def unmask_schedule(n_tokens, steps, alpha0=1.0, generator=None):
    """Tokens unmasked per diffusion step (spec §4.6, C5) -> list of positive ints, sum <= n_tokens.

    For t in linspace(1, 1/T, T), s = t - 1/T: k ~ Binomial(remaining, (alpha_s - alpha_t) / (1 - alpha_t)).
    Steps with k = 0 are dropped (they cost no network call). The last step has alpha_s = alpha0, so with alpha0 = 1
    everything left is unmasked; with alpha0 < 1 about n_tokens (1 - alpha0) / (1 - alpha0 eps) tokens are left for
    the sequential tail. The counts are shared by all samples of a batch, as in the paper.
    """
    device = generator.device if generator is not None else 'cpu'
    grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)                 # t = grid[i], s = grid[i + 1]
    counts, remaining = [], n_tokens
    for t, s in zip(grid[:-1].tolist(), grid[1:].tolist()):
        alpha_t, alpha_s = noise.alpha(t, alpha0), noise.alpha(s, alpha0)
        p = min(max((alpha_s - alpha_t) / (1 - alpha_t), 0.0), 1.0)
        k = int(torch.binomial(torch.tensor([float(remaining)], dtype=torch.float64, device=device),
                               torch.tensor([p], dtype=torch.float64, device=device), generator=generator))
        if k > 0:
            counts.append(k)
            remaining -= k
    if remaining > 0 and alpha0 == 1.0:  # safety net: alpha0 = 1 must decode everything by diffusion
        counts.append(remaining)
    return counts


@torch.no_grad()
def sample(model, n, length, steps=None, prompt=None, temperature=1.0, top_p=1.0, generator=None, callback=None,
           alpha0=None, use_cache=True, given=None, order='random', block_size=None):
    """Eso-LM (B) sampler (spec §4.6) -> (x (n, length), nfe = non-empty diffusion steps + sequential tail).

    steps: T of the unmask schedule (default: length). alpha0: the sampling-time alpha0 (default 1.0, pure diffusion;
    sample.py passes the trained value), it may differ from training. Every sample gets its own random order: the
    prompt first (positions 0..P-1), then the diffusion tokens shuffled, then the sequential tail left to right.
    x is kept in sorted coordinates; each call decodes the next k slots with float64 probabilities and the float64
    exponential race (the paper uses float32 Gumbel noise here, spec §9.10); temperature=0 is greedy (argmax). With
    `use_cache` a call runs only the previous chunk's newly decoded tokens (whose keys then join the cache; masks
    are never cached) and the k current masks; without it, the causal forward over the sorted prefix. Both give the
    same logits (tests/test_eso.py).

    prompt / given (n, length) long, decode.FREE = free: fixed tokens at any positions. They are clean, so they
      come FIRST in the clean-first order (slots 0..G-1, in position order: the keys of the KV cache's first call),
      exactly as in the conditional loss, and are never changed. Rows may differ in how many positions are free
      (prompts of different lengths): the cache and the shared unmask schedule need every row to run the same slots
      at every call, so each block has as many free slots as its most-free row, and a row with e fewer free
      positions in a block gives e of its given tokens there (the last ones in the block) the block's first slots:
      they are written clean, never drawn, and every mask of the block comes after them and sees them. Such a row
      decodes e fewer of its own tokens in the block's first call(s); nfe is the same for every row. (A given token
      moved into block b is not seen by the row's masks of earlier blocks: with a prompt per row there are none.)
    block_size (default: None = one block): semi-autoregressive blocks left to right; each block has its own unmask
      schedule of `steps` steps (default: block_size) over its free positions, alpha0 included (a sequential tail
      per block), and its slots follow the earlier blocks' in the clean-first order. block_size=1, steps=1: one
      call per token, left to right.
    order: 'random' is the family's own order above. 'confidence' / 'margin' keep the same counts k per call (the
      unmask schedule) but choose WHICH positions greedily, per row: a call runs the clean slots and ALL the
      remaining masks of the current block (laid out in the random order), and the k masks with the highest top
      probability (or top1 - top2 margin, of softmax(logits)) become the next k clean slots; the rest stay masks
      after them. The clean-first causal structure is kept (a committed token only ever attends to clean tokens
      committed before it, as in training), so the KV cache stays exact: the committed tokens join it at the next
      call, masks never do. A call costs the block's remaining masks instead of k rows.
    """
    alpha0 = 1.0 if alpha0 is None else alpha0
    if not 0.0 <= alpha0 <= 1.0:
        raise ValueError(f"alpha0 must lie in [0, 1], got {alpha0}")
    decode.check_order(order, decode.ORDERS, 'Eso-LM')
    decode.blocks(length, block_size)                                              # checks block_size
    device, mask_id = next(model.parameters()).device, model.cfg.mask_id
    steps, _ = noise.check_sampling_args(length, steps if block_size is None else (steps or block_size), None,
                                         mask_id)
    given = decode.resolve_given(n, length, prompt, given, model.cfg.vocab_size, mask_id, device)
    spans = decode.blocks(length, block_size)
    n, L = given.shape
    free = given == decode.FREE                                                 # (n, L)
    F = torch.stack([free[:, a:b].sum(dim=1) for a, b in spans], dim=1)        # (n, blocks) free per block
    F_max = F.max(dim=0).values.tolist()                                        # slots per block, every row
    # extra (n, L) bool: the given tokens a row with fewer free positions in a block puts into the block's slots
    extra = torch.zeros_like(free)
    for j, (a, b) in enumerate(spans):
        g = ~free[:, a:b]                                                       # (n, b - a) given in the block
        after = g.flip(1).long().cumsum(1).flip(1) - g.long()                  # given positions after each one
        extra[:, a:b] = g & (after < (F_max[j] - F[:, j:j + 1]))               # the last F_max - F of them
    G = L - sum(F_max)                                                          # given slots, first, every row
    schedules, n_diffs = [], []
    for F_b in F_max:                                                           # drawn first, as before
        counts = unmask_schedule(F_b, steps, alpha0, generator) if F_b else []
        n_diffs.append(sum(counts))
        schedules.append(counts + [1] * (F_b - sum(counts)))                   # the sequential tail, one per call
    # order (n, L): given slots first (position order), then per block its extra given tokens (position order) and
    # a random permutation of its free positions whose last entries (the sequential tail) are re-sorted ascending
    rest = free | extra
    rest_pos = rest.nonzero()[:, 1].view(n, L - G)                              # (n, L - G) ascending per row
    block_of = torch.bucketize(rest_pos, torch.tensor([b for _, b in spans], device=device), right=True)
    u = torch.rand(n, L - G, generator=generator, device=device)
    key = 2 * block_of + torch.where(free.gather(1, rest_pos), u, -0.5)       # blocks in order: extras, then random
    perm = rest_pos.gather(1, key.argsort(dim=1, stable=True))
    start = 0
    for F_b, n_diff in zip(F_max, n_diffs):                                     # the tail: extras, then ascending
        tail = perm[:, start + n_diff:start + F_b]
        perm[:, start + n_diff:start + F_b] = tail.gather(1, (tail + L * free.gather(1, tail)).argsort(dim=1))
        start += F_b
    sort_idx = torch.cat([(~rest).nonzero()[:, 1].view(n, G), perm], dim=1)   # original position per slot

    fixed_sorted = given.gather(1, sort_idx)                                   # given token per slot, FREE = drawn
    x = torch.where(fixed_sorted != decode.FREE, fixed_sorted, mask_id)        # sorted coordinates
    cache = model.new_cache() if use_cache else None
    decoded, last_start, block_end, nfe = G, 0, G, 0                           # slots [0, decoded) are clean
    for F_b, schedule in zip(F_max, schedules):
        block_end += F_b
        for k in schedule:
            end = decoded + k
            upto = end if order == 'random' else block_end                     # the masks this call runs
            if use_cache:  # rows [last_start, decoded) are clean now and get cached; [decoded, upto) are masks
                logits = model(x[:, last_start:upto], pos=sort_idx[:, last_start:upto], cache=cache,
                               keep=decoded - last_start)[:, decoded - last_start:]   # (n, upto - decoded, V)
            else:
                logits = model(x[:, :upto], attn='causal', pos=sort_idx[:, :upto])[:, decoded:]
            nfe += 1
            if order != 'random':  # the k best masks of each row take slots [decoded, end), the rest follow
                score = decode.scores(logits, order).masked_fill(               # extra given tokens first
                    given.gather(1, sort_idx[:, decoded:upto]) != decode.FREE, 2.0)    # (scores lie in [0, 1])
                best = decode.select(score, torch.ones_like(score, dtype=torch.bool),
                                     torch.full((n,), k, device=device))      # (n, upto - decoded) bool
                moved = (~best).long().argsort(dim=1, stable=True)             # chosen first, order kept
                sort_idx[:, decoded:upto] = sort_idx[:, decoded:upto].gather(1, moved)
                x[:, decoded:upto] = x[:, decoded:upto].gather(1, moved)          # (extra given tokens move along)
                logits = logits.gather(1, moved[:, :k, None].expand(-1, -1, logits.size(-1)))   # (n, k, V)
            p = noise.probs_from_logits(logits, temperature, top_p)            # (n, k, V) float64
            fixed = given.gather(1, sort_idx[:, decoded:end])                  # (n, k): extra given tokens
            x[:, decoded:end] = torch.where(fixed != decode.FREE, fixed, noise.sample_categorical(p, generator))
            last_start, decoded = decoded, end
            if callback is not None:
                callback(torch.empty_like(x).scatter_(1, sort_idx, x))         # original coordinates
    return torch.empty_like(x).scatter_(1, sort_idx, x), nfe                   # x_final[:, sort_idx[:, j]] = x[:, j]
