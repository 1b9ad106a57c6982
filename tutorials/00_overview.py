"""Lesson 00: four families, one backbone, one FLOP accounting.

    python tutorials/00_overview.py            # ~1 min on a laptop CPU: trains the four families at one budget
    python tutorials/00_overview.py --quick    # seconds (the tests)

Builds the same backbone for AR, MDLM, Duo and Eso-LM, shows that parameters and FLOPs are identical, checks each
loss at initialisation against its closed form, then trains all four for the same FLOP budget and plots the
validation loss against training FLOPs -> 00_families.png.
"""
import math

import lesson_utils as lu
import torch

from nanodllm import flops
from nanodllm.families import FAMILIES
from nanodllm.config import get_config
from nanodllm.model import Model
from nanodllm.noise import EPS, T_MIN


def main(argv=None):
    args = lu.parser(__doc__).parse_args(argv)
    size, L, B = 'nano', 64, 16
    steps, every, n_val = (6, 3, 1) if args.quick else (400, 50, 4)
    text = lu.Text()
    V = text.tokenizer.n_vocab + 1  # 256 bytes + the mask token

    # 1) one backbone: the same parameters and FLOPs whatever the family
    cfg = get_config(size, V, L)
    model = Model(cfg)
    F = flops.forward_flops_per_token(cfg)
    print(f"size {size}: {model.num_params() / 1e6:.3f}M non-embedding parameters "
          f"(analytic count {flops.non_embedding_params(cfg) / 1e6:.3f}M), F = {F / 1e6:.3f} MFLOP forward per token")
    print(f"one training step of {B} x {L} tokens costs 3 F B L = {3 * F * B * L:.3g} FLOPs, in every family; "
          f"a 1e12 FLOP budget buys {flops.steps_for_budget(1e12, cfg, B * L)} steps")

    # 2) at initialisation the head is zero: every prediction is uniform over the V - 1 real tokens
    x0 = text.val_batch(4 * B, L)
    log_v = math.log(V - 1)
    mean_t = (1 - T_MIN) / 2 + T_MIN                                  # E[t], t ~ U[1e-3, 1]
    torch.manual_seed(args.seed)
    for name, train, want in [('ar', True, log_v), ('mdlm', True, (1 - EPS) * mean_t * log_v),
                              ('mdlm', False, (1 - EPS) * log_v), ('duo', False, None),
                              ('eso', True, (1 - EPS) * mean_t * log_v)]:
        nll, n = FAMILIES[name].loss(model, x0, train=train, generator=torch.Generator().manual_seed(0))
        what = 'NLL' if name == 'ar' else 'low-var CE' if train else 'NELBO'
        print(f"loss at init, {name:4s} {what:10s}: {nll.item() / n:.3f}"
              + ('' if want is None else f"   (closed form, in expectation: {want:.3f})"))
    print(f"  AR: log(V-1) = log {V - 1}. A fraction (1-eps) t of the tokens is masked, so the low-var CE is "
          f"(1-eps) E[t] log(V-1) and the NELBO, weighted by 1/t, is (1-eps) log(V-1). Duo: lesson 04's exercise.")

    # 3) the same budget for everyone: equal steps, equal FLOPs; record the validation loss along the way
    curves = {}
    for name in FAMILIES:
        points = []

        def record(step, m, points=points, name=name):
            if step % every == 0:
                m.eval()
                points.append((3 * F * B * L * step, lu.val_loss(name, m, text, batches=n_val, batch_size=B)))
                m.train()
        lu.train(name, text, size=size, seq_len=L, batch_size=B, steps=steps, seed=args.seed, callback=record,
                 log_every=0 if args.quick else 100)
        curves[name] = points
        print(f"{name}: validation loss {points[-1][1]:.3f} after {steps} steps = {points[-1][0]:.3g} FLOPs")

    fig, ax = lu.plt.subplots(figsize=(6.4, 4))
    labels = {'ar': 'AR (NLL)', 'mdlm': 'MDLM (NELBO)', 'duo': 'Duo (NELBO)', 'eso': 'Eso-LM α₀=1 (NELBO)'}
    for name, points in curves.items():
        c, v = zip(*points)
        ax.plot(c, v, marker='o', ms=3, label=f"{labels[name]}: {v[-1]:.2f}")
    ax.axhline(log_v, color='gray', ls=':', lw=1, label=f'uniform guess, log {V - 1} = {log_v:.2f}')
    ax.set_xlabel('training FLOPs (3 F × tokens)')
    ax.set_ylabel('validation loss (nats / byte)')
    ax.set_title(f'Four families, one backbone ({size}, {model.num_params() / 1e3:.0f}k params), one budget')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lu.savefig(fig, args, '00_families.png')


if __name__ == '__main__':
    main()
