"""Lesson 09 (part 1): conditional losses, infilling and decoding orders.

    python tutorials/09_conditional.py                             # ~1 min on a laptop CPU: trains a small MDLM
    python tutorials/09_conditional.py --ckpt out_mdlm/ckpt.pt     # or use a `train.py --family mdlm` checkpoint
    python tutorials/09_conditional.py --quick                     # seconds (the tests)

1) One prompt/response row (prompt + response + EOS padding) through each family's loss with `given` = the prompt:
   what the network sees and which positions the loss scores, read off the gradient of a per-position logit offset
   -> 09_given.png;
2) an MDLM trained on Shakespeare fills a 16-byte gap in validation windows, with each decoding order (its own
   ancestral sampler, confidence, margin, and left to right one token per call) at several numbers of network calls:
   the fraction of gap bytes it gets exactly right, and of the words it touches that are real words
   -> 09_orders.png; AR refuses the infill in one line.
"""
import re

import lesson_utils as lu
import numpy as np
import torch

from nanodllm import decode, noise
from nanodllm.families import get_family
from nanodllm.config import get_config
from nanodllm.model import Model

EOS = 0  # the byte tokenizer's EOS (the NUL byte, absent from text)


class Probe(torch.nn.Module):
    """Wraps a Model for one row: records the network input in ORIGINAL positions (Eso-LM permutes them and passes
    `pos`) and adds a logit offset per position, so that the gradient says which positions the loss scores."""

    def __init__(self, model, L):
        super().__init__()
        self.inner, self.cfg, self.seen = model, model.cfg, None
        self.bias = torch.nn.Parameter(torch.zeros(L, model.cfg.vocab_size))

    def forward(self, idx, sigma=None, attn='full', pos=None, rows=None, **kw):
        out = self.inner(idx, sigma=sigma, attn=attn, pos=pos, rows=rows, **kw)
        p = torch.arange(idx.size(1))[None] if pos is None else pos
        if self.seen is None:
            self.seen = torch.empty_like(idx).scatter_(1, p, idx)[0]             # (L,) what the network saw
        return out + self.bias[p if rows is None else p[:, rows]]


def what_the_loss_sees(family, model, x0, given, seed):
    """-> (network input (L,), scored (L,) bool: positions whose own term is in the loss, nll per scored token)."""
    probe = Probe(model, x0.size(0))
    torch.manual_seed(seed)
    nll, n = get_family(family).loss(probe, x0[None], train=True, given=given[None],
                                     generator=torch.Generator().manual_seed(seed))
    nll.backward()
    scored = probe.bias.grad.abs().sum(-1) > 0                                   # (L,) output rows in the loss
    if family == 'ar':                                                           # output row j scores target j+1
        scored = torch.cat([torch.zeros(1, dtype=torch.bool), scored[:-1]])
        probe.seen = torch.cat([probe.seen, x0[-1:]])                            # AR's input is x0[:-1]
    return probe.seen, scored, nll.item() / int(n)


def figure_given(args, text):
    """Figure 1: given / corrupted / scored per position for one prompt/response row, all four families."""
    L, P, R = 48, 16, 22
    window = text.val_batch(1, P + R)[0]
    x0 = torch.full((L,), EOS)
    x0[:P + R] = window                                         # prompt + response, then EOS padding to L
    given = torch.zeros(L, dtype=torch.bool)
    given[:P] = True
    torch.manual_seed(args.seed)
    model = Model(get_config('nano', text.tokenizer.n_vocab + 1, L))             # untrained: only shapes matter
    mask_id = model.cfg.mask_id
    fig, ax = lu.plt.subplots(figsize=(12, 3.2))
    colours = {0: (0.8, 0.8, 0.8), 1: (1.0, 1.0, 1.0), 2: (0.55, 0.75, 1.0), 3: (1.0, 0.65, 0.3)}
    grid = np.zeros((4, L, 3))
    # a seed whose t is near 0.5, so that about half of the response is corrupted
    seed = next(s for s in range(args.seed, args.seed + 1000)
                if 0.4 < noise.sample_t(1, generator=torch.Generator().manual_seed(s)).item() < 0.6)
    for r, family in enumerate(('ar', 'mdlm', 'duo', 'eso')):
        seen, scored, per_token = what_the_loss_sees(family, model, x0, given, seed)
        corrupted = seen != x0
        assert not (scored & given).any() and not corrupted[given].any()        # the contract, checked here too
        kind = torch.where(given, 0, torch.where(scored & corrupted, 3, torch.where(scored, 2, 1)))
        for i in range(L):
            grid[r, i] = colours[int(kind[i])]
            ax.text(i, r, text.cells([int(seen[i])], mask_id)[0] if int(seen[i]) != EOS else '∅', ha='center',
                    va='center', fontsize=8, family='monospace', color='red' if corrupted[i] else 'black')
        print(f"{family:>4}: network input {text.show(seen, mask_id)!r}: {int(scored.sum())} scored positions "
              f"of {int((~given[int(family == 'ar'):]).sum())} not given, {per_token:.2f} nats per scored token")
    ax.imshow(grid, aspect='auto')
    ax.set_yticks(range(4), ['AR', 'MDLM', 'Duo', 'Eso-LM'])
    ax.set_xticks([0, P, P + R, L - 1], ['0', f'{P}: response', f'{P + R}: EOS pad', str(L - 1)])
    ax.set_title('What the conditional loss sees: grey = given (prompt, never corrupted or scored); orange = '
                 'corrupted and scored; blue = clean and scored; white = clean, not scored; red letters = noise',
                 fontsize=8.5)
    lu.savefig(fig, args, '09_given.png')


@torch.no_grad()
def infill(model, given, order, steps, block_size=None, seed=0):
    """Fill the free positions of `given` (greedy tokens) -> (samples (n, L), network calls)."""
    return get_family('mdlm').sample(model, given.size(0), given.size(1), steps=steps, given=given, order=order,
                                     block_size=block_size, temperature=0.0,
                                     generator=torch.Generator().manual_seed(seed))


def scores(x, x0, gap, words):
    """-> (fraction of the gap's bytes equal to the original, fraction of the words the gap touches that are words
    of the training text). The first rewards each byte's own most likely value; the second, fills that read."""
    exact = (x[:, gap] == x0[:, gap]).double().mean().item()
    touched = []
    for row in x.tolist():
        s = bytes(row).decode('latin-1').lower()
        touched += [m.group() for m in re.finditer(r"[a-z']+", s) if m.end() > gap.start and m.start() < gap.stop]
    return exact, float(np.mean([w in words for w in touched]))


def main(argv=None):
    args = lu.parser(__doc__, ckpt='one').parse_args(argv)
    text = lu.Text()
    figure_given(args, text)

    # 2) an MDLM (trained on plain text: its any-order loss already covers infilling)
    if args.ckpt:
        model, _, _, text = lu.load(args.ckpt, 'mdlm')
    else:
        steps = args.train_steps or (10 if args.quick else 1000)
        model, _ = lu.train('mdlm', text, steps=steps, seed=args.seed, log_every=0 if args.quick else 250)
    L = min(model.cfg.seq_len, 64)
    n = 16 if args.quick else 128
    x0 = torch.from_numpy(text.val[:n * L].astype(np.int64).reshape(n, L))          # validation windows
    gap = slice(L // 2 - 8, L // 2 + 8)                                             # 16 bytes in the middle
    given = x0.clone()
    given[:, gap] = decode.FREE
    try:
        get_family('ar').sample(model, n, L, given=given)
    except ValueError as e:
        print(f"AR on an infill: ValueError: {e}")

    words = set(re.findall(r"[a-z']+", bytes(text.train.astype(np.uint8)).decode('latin-1').lower()))
    budgets = [1, 2, 4, 8, 16]
    fig, axes = lu.plt.subplots(1, 2, figsize=(11.5, 4))
    for order, marker in (('random', 'o-'), ('confidence', 's-'), ('margin', '^-')):
        points = []
        for T in budgets:
            x, nfe = infill(model, given, order, T, seed=args.seed)
            points.append((nfe, *scores(x, x0, gap, words)))
        label = order if order != 'random' else "random (MDLM's ancestral sampler)"
        for ax, col in zip(axes, (1, 2)):
            ax.plot([p[0] for p in points], [p[col] for p in points], marker, label=label)
        print(f"{order:>10}: " + ', '.join(f"{nfe} calls: bytes {b:.1%} words {w:.1%}" for nfe, b, w in points))
    x, nfe = infill(model, given, 'random', 1, block_size=1, seed=args.seed)
    exact, valid = scores(x, x0, gap, words)
    print(f"left to right (block_size=1, steps=1): {nfe} calls: bytes {exact:.1%} words {valid:.1%}")
    print(f"the original text: words {scores(x0, x0, gap, words)[1]:.1%}")
    for ax, y in zip(axes, (exact, valid)):
        ax.plot([nfe], [y], 'k*', ms=12, label='left to right, one token per call\n(block_size=1, steps=1)')
        ax.set_xscale('log', base=2)
        ax.set_xlabel('network calls for the 16-byte gap')
        ax.grid(alpha=0.3)
    axes[1].axhline(scores(x0, x0, gap, words)[1], color='gray', ls=':', label='the original text')
    axes[0].set_ylabel('gap bytes equal to the original')
    axes[1].set_ylabel('words touching the gap that are real words')
    axes[0].set_title(f'MDLM infilling, greedy tokens, {n} validation windows of {L} bytes', fontsize=9)
    axes[1].set_title('... and whether the fill reads as words', fontsize=9)
    axes[1].legend(fontsize=7.5)
    lu.savefig(fig, args, '09_orders.png')

    # the gap of one window filling in, confidence order, 4 positions per call
    states = []
    get_family('mdlm').sample(model, 1, L, steps=4, given=given[:1], order='confidence', temperature=0.0,
                              callback=lambda s: states.append(s[0].clone()))
    x, _ = infill(model, given[:4], 'confidence', 16)
    y, _ = infill(model, given[:4], 'random', 16)
    for b in range(4):
        print(f"gap {b}: original {text.show(x0[b, gap])!r}, confidence {text.show(x[b, gap])!r}, "
              f"random {text.show(y[b, gap])!r}")
    print("original:   " + text.show(x0[0]))
    print("given:      " + text.show(torch.where(given[0] == decode.FREE, model.cfg.mask_id, given[0]),
                                     model.cfg.mask_id))
    for i, s in enumerate(states):
        print(f"call {i + 1}:     " + text.show(s, model.cfg.mask_id))


if __name__ == '__main__':
    main()
