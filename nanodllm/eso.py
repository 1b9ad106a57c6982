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
    exactly as in the conditional loss, and are never changed. Rows that do not have the same number of free
    positions (in every block) are decoded as separate batches, one after the other (the cache and the shared
    unmask schedule need aligned slots); nfe counts every call, and callback gets the whole (n, length) state.
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
    free = given == decode.FREE                                                 # (n, length)
    counts = torch.stack([free[:, a:b].sum(dim=1) for a, b in spans], dim=1)    # (n, blocks) free per block
    groups = counts.unique(dim=0)
    args = (steps, temperature, top_p, generator, alpha0, use_cache, order, spans)
    if len(groups) == 1:
        return _sample_aligned(model, given, counts[0].tolist(), callback, *args)
    out, nfe = torch.where(free, mask_id, given), 0
    for key in groups:
        rows = (counts == key).all(dim=1).nonzero()[:, 0]

        def show(x_rows, rows=rows):                                            # the whole state for callback
            out[rows] = x_rows
            callback(out.clone())
        x_rows, calls = _sample_aligned(model, given[rows], key.tolist(), show if callback else None, *args)
        out[rows], nfe = x_rows, nfe + calls
    return out, nfe


def _sample_aligned(model, given, free_per_block, callback, steps, temperature, top_p, generator, alpha0,
                    use_cache, order, spans):
    """`sample` for rows with the same number of free positions in every block -> (x (n, L), nfe)."""
    (n, L), device, mask_id = given.shape, given.device, model.cfg.mask_id
    free = given == decode.FREE
    G = L - sum(free_per_block)                                                 # given slots, first
    schedules, n_diffs = [], []
    for F_b in free_per_block:                                                  # drawn first, as before
        counts = unmask_schedule(F_b, steps, alpha0, generator) if F_b else []
        n_diffs.append(sum(counts))
        schedules.append(counts + [1] * (F_b - sum(counts)))                   # the sequential tail, one per call
    # order (n, L): given slots first (position order), then per block a random permutation of its free positions
    # whose last entries (the sequential tail) are re-sorted ascending
    free_pos = free.nonzero()[:, 1].view(n, L - G)                              # (n, F) ascending per row
    block_of = torch.bucketize(free_pos, torch.tensor([b for _, b in spans], device=device), right=True)
    key = block_of + torch.rand(n, L - G, generator=generator, device=device)  # blocks in order, random inside
    perm = free_pos.gather(1, key.argsort(dim=1))
    start = 0
    for F_b, n_diff in zip(free_per_block, n_diffs):
        perm[:, start + n_diff:start + F_b] = perm[:, start + n_diff:start + F_b].sort(dim=1).values
        start += F_b
    sort_idx = torch.cat([(~free).nonzero()[:, 1].view(n, G), perm], dim=1)   # original position per slot

    x = torch.full((n, L), mask_id, dtype=torch.long, device=device)           # sorted coordinates
    x[:, :G] = given.gather(1, sort_idx[:, :G])
    cache = model.new_cache() if use_cache else None
    decoded, last_start, block_end, nfe = G, 0, G, 0                           # slots [0, decoded) are clean
    for F_b, schedule in zip(free_per_block, schedules):
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
                best = decode.select(decode.scores(logits, order), torch.ones_like(logits[..., 0], dtype=torch.bool),
                                     torch.full((n,), k, device=device))      # (n, upto - decoded) bool
                moved = (~best).long().argsort(dim=1, stable=True)             # chosen first, order kept
                sort_idx[:, decoded:upto] = sort_idx[:, decoded:upto].gather(1, moved)
                logits = logits.gather(1, moved[:, :k, None].expand(-1, -1, logits.size(-1)))   # (n, k, V)
            p = noise.probs_from_logits(logits, temperature, top_p)            # (n, k, V) float64
            x[:, decoded:end] = noise.sample_categorical(p, generator)
            last_start, decoded = decoded, end
            if callback is not None:
                callback(torch.empty_like(x).scatter_(1, sort_idx, x))         # original coordinates
    return torch.empty_like(x).scatter_(1, sort_idx, x), nfe                   # x_final[:, sort_idx[:, j]] = x[:, j]
