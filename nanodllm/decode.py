"""Conditional decoding shared by the four samplers: given tokens, decoding orders, semi-AR blocks, cutting at EOS.

- `given` (n, length) long: the token id at fixed positions and FREE (-1) at the positions to generate; `prompt`
  (P,) is the shorthand for the same prefix in every row (`resolve_given` merges the two and checks them);
- orders (sft.md §3): 'random' (each family's own sampler), 'confidence' (commit the free positions whose top
  probability is highest) and 'margin' (largest top1 - top2 gap), chosen PER ROW (`select`), never over the
  flattened batch (SMDM's top-k runs over the whole batch, sft.md §2);
- blocks: `blocks` cuts the sequence into semi-autoregressive blocks decoded left to right, `steps` steps each;
  `split_counts` spreads a block's free positions over its steps (as LLaDA/dllm: the remainder to the first steps);
- `cut_at_eos`: the generated text ends at the first EOS after the given positions.
"""
import torch

FREE = -1                                    # a free (to be generated) position of `given`
ORDERS = ('random', 'confidence', 'margin')


def resolve_given(n, length, prompt=None, given=None, vocab_size=None, mask_id=None, device='cpu'):
    """The fixed tokens of a sample -> (n, length) long on `device`, FREE at the positions to generate.

    prompt (P,): fixed at positions 0..P-1 of every row (today's prefix); given (n, length) long: fixed token ids,
    FREE elsewhere. Both may be passed if they agree on the prefix. Bad input is one ValueError line: a wrong shape,
    an id outside [0, V) or the mask id, or nothing left to generate."""
    out = torch.full((n, length), FREE, dtype=torch.long, device=device)
    if given is not None:
        if not torch.is_tensor(given) or given.dtype.is_floating_point or given.dtype == torch.bool \
                or tuple(given.shape) != (n, length):
            raise ValueError(f"given must be an integer tensor of shape ({n}, {length}) with token ids at fixed "
                             f"positions and {FREE} (decode.FREE) elsewhere, got "
                             f"{getattr(given, 'dtype', type(given).__name__)} {tuple(getattr(given, 'shape', ()))}")
        out.copy_(given.to(device))
    if prompt is not None and len(prompt):
        P = len(prompt)
        if P >= length:
            raise ValueError(f"prompt has {P} tokens but the sample length is {length}: use a shorter prompt or a "
                             f"larger --length")
        prompt = torch.as_tensor(prompt, dtype=torch.long, device=device)
        clash = (out[:, :P] != FREE) & (out[:, :P] != prompt)
        if clash.any():
            raise ValueError("prompt and given disagree on the prefix: pass one of them")
        out[:, :P] = prompt
    fixed = out != FREE
    if (out < FREE).any() or (vocab_size is not None and (out >= vocab_size).any()):
        raise ValueError(f"given/prompt ids must lie in [0, {vocab_size}) (or be {FREE} = free)")
    if mask_id is not None and (out == mask_id).any():
        raise ValueError(f"the prompt (or given) contains the mask id {mask_id}: pass clean token ids only")
    if fixed.all(dim=1).any():
        raise ValueError("given fixes every position of a row: leave at least one position free (-1) to generate")
    return out


def check_order(order, allowed, family):
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order not in allowed:
        raise ValueError(f"{family} cannot decode in order {order!r} (it has no masks to commit by confidence): "
                         f"use order='random'")


def blocks(length, block_size=None):
    """Semi-autoregressive blocks [(start, end), ...] covering 0..length, left to right; None = one block."""
    if block_size is None:
        return [(0, length)]
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return [(s, min(s + block_size, length)) for s in range(0, length, block_size)]


def split_counts(n_free, steps):
    """Positions to commit per step, per row: n_free (n,) long -> (steps, n) long, summing to n_free over the steps,
    n_free // steps each and one more in the first n_free % steps steps (LLaDA's `get_num_transfer_tokens`)."""
    base, extra = n_free // steps, n_free % steps                            # (n,) each
    step = torch.arange(steps, device=n_free.device)[:, None]                # (steps, 1)
    return base[None] + (step < extra[None]).long()                          # (steps, n)


def scores(logits, order, generator=None):
    """How eager each position is to be committed -> (n, L) float64, higher first.

    'confidence': the top probability max_j p_j; 'margin': p_(1) - p_(2); both from softmax(logits) at
    temperature 1 (so that temperature 0, a one-hot p, still ranks the positions); 'random': U[0, 1) draws."""
    if order == 'random':
        return torch.rand(logits.shape[:-1], generator=generator, dtype=torch.float64, device=logits.device)
    p = logits.double().softmax(dim=-1)                                      # (n, L, V), p_mask = 0
    top = p.topk(2, dim=-1).values                                           # (n, L, 2)
    return top[..., 0] if order == 'confidence' else top[..., 0] - top[..., 1]


def select(score, candidates, k):
    """Per row, the k[b] candidate positions with the highest score -> (n, L) bool (ties: the leftmost first).

    score (n, L), candidates (n, L) bool, k (n,) long <= candidates.sum(1). Ranked within each row only."""
    score = score.masked_fill(~candidates, float('-inf'))
    rank = score.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (n, L): 0 = the best of its row
    return candidates & (rank < k[:, None])


def cut_at_eos(x, eos, given=None):
    """Each row up to (not including) its first EOS after the given positions -> list of n lists of ints.

    x (n, L) long; given (n, L) long (FREE = free) or None. The search starts after the row's last given position
    (a prompt may itself contain EOS, and an infill's suffix is kept whole), so the output keeps the prompt and
    ends where the model chose to stop; a row without an EOS there is returned whole. Lists, because rows end at
    different lengths and sample.py decodes each row with the tokenizer."""
    out = []
    for b, row in enumerate(x.tolist()):
        start = 0
        if given is not None:
            fixed = (given[b] != FREE).nonzero()
            start = int(fixed[-1]) + 1 if len(fixed) else 0
        end = next((i for i in range(start, len(row)) if row[i] == eos), len(row))
        out.append(row[:end])
    return out


def prefix_lengths(given):
    """AR's check: every row's given positions must form a prefix -> (n,) long lengths, each >= 1."""
    fixed = given != FREE                                                    # (n, L) bool
    P = fixed.long().cumprod(dim=1).sum(dim=1)                               # (n,) length of the leading run
    if (fixed.sum(dim=1) != P).any():
        raise ValueError("AR decodes left to right: it takes a given prefix only, not an infill (a fixed token "
                         "after a free position): use a diffusion family (mdlm, duo, eso) to infill")
    if (P == 0).any():
        raise ValueError("AR sampling starts from a prompt: pass at least the tokenizer's BOS id")
    return P
