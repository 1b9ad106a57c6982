"""AR: the autoregressive baseline (spec §1): causal attention, shifted next-token NLL, left-to-right sampling.

The surface every family shares: `OPTIONS`, `loss(model, x0, ...) -> (nll_sum, n_tokens)` and
`sample(model, n, length, ...) -> (x, nfe)`. AR differs from the diffusion families in that it has no noise and no
time: it feeds sigma = 0 (adaLN stays, constant), attends causally, and scores L-1 of the L positions.
Conditioning (`given`, issue 18): the loss drops the given targets; the sampler takes a given prefix per row and
refuses an infill.
"""
import torch
import torch.nn.functional as F

from . import decode, noise

OPTIONS = {}                # AR has no training options
TIME_CONDITIONING = False   # sigma = 0: adaLN gives a constant, learned modulation (spec §0.4)
BOS_PREFIX = True           # unconditional samples start from the tokenizer's BOS (spec §1)


def loss(model, x0, train=True, strata=(0, 1), generator=None, given=None):
    """Shifted NLL (spec §1): inputs x0[:, :-1], targets x0[:, 1:]; the first token is never scored.

    x0 (B, L) -> (sum of -log p(x_i | x_<i) over the scored targets, number of scored targets). Train and eval use
    the same exact NLL; `strata` and `generator` are accepted for the common surface and unused (AR draws no t).
    given: None or (B, L) bool, True = a given (prompt) position: it is still fed as input (the causal context of
      every later position) but its own target term is dropped, so target i counts iff not given[:, i] (position 0
      is never a target). n_tokens is then a (0-d, long) tensor: the number of not-given positions among 1..L-1,
      i.e. the response and its EOS padding ("token" normalisation, as SMDM/dllm). given=None (or all False) scores
      all B (L-1) targets, exactly as before.
    """
    given = noise.given_mask(given, x0)
    logits = model(x0[:, :-1], attn='causal')                                  # (B, L-1, V) fp32, mask = -1e6
    if given is None:
        nll = F.cross_entropy(logits.flatten(0, 1), x0[:, 1:].flatten(), reduction='sum')
        return nll, x0[:, 1:].numel()
    scored = ~given[:, 1:]                                                     # (B, L-1) bool: response targets
    targets = x0[:, 1:].masked_fill(~scored, -100)                             # given targets -> ignore index
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction='sum')
    return nll, scored.sum()


@torch.no_grad()
def sample(model, n, length, steps=None, prompt=None, temperature=1.0, top_p=1.0, generator=None, callback=None,
           use_cache=True, given=None, order='random', block_size=None):
    """Left-to-right sampling from a prompt (at least BOS) -> (x (n, length), nfe = length - P).

    Each step takes the last position's logits (mask logit -1e6), applies temperature and top-p, and draws with
    float64 Gumbel-max (the exponential race of noise.sample_categorical); temperature=0 is greedy (argmax). With
    `use_cache` the prompt is run once and every later call feeds only the newest token, whose key (rotated once,
    at its position) and value are written into the preallocated KV cache; without it, every call reruns the whole
    prefix. Both give the same logits (tests/test_model.py). The head runs on the last row only.
    given (n, length) long, decode.FREE = free: a prefix per row, which may differ in length between rows: decoding
    starts after the shortest one, and a row's given tokens are written in place of its draws until its own prefix
    ends (nfe = length - the shortest prefix). A fixed token after a free position (an infill) is refused.
    `steps`, `order` ('random' only: AR's order is left to right) and `block_size` are accepted for the common
    surface: AR always makes one network call per new token, which is already "left to right, one token per step".
    """
    decode.check_order(order, ('random',), 'AR')
    decode.blocks(length, block_size)                                          # checks block_size
    if given is None and (prompt is None or len(prompt) == 0):
        raise ValueError("AR sampling starts from a prompt: pass at least the tokenizer's BOS id")
    device = next(model.parameters()).device
    given = decode.resolve_given(n, length, prompt, given, model.cfg.vocab_size, model.cfg.mask_id, device)
    P = int(decode.prefix_lengths(given).min())                               # the shortest prefix
    fixed = given != decode.FREE                                               # (n, length) bool
    x = torch.where(fixed, given, model.cfg.mask_id)                           # filled left to right
    cache = model.new_cache(length) if use_cache else None
    for i in range(P, length):
        inp = x[:, :i] if (cache is None or i == P) else x[:, i - 1:i]          # whole prefix, or the newest token
        logits = model(inp, attn='causal', cache=cache, rows=slice(-1, None))[:, 0]   # (n, V): the last row only
        p = noise.probs_from_logits(logits, temperature, top_p)                # (n, V) float64
        x[:, i] = torch.where(fixed[:, i], given[:, i], noise.sample_categorical(p, generator))
        if callback is not None:  # the state so far, padded with mask ids to the full length
            callback(x.clone())
    return x, length - P
