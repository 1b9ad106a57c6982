"""Lesson 05: Eso-LM, between diffusion and AR: clean-first order, KV caching inside diffusion, alpha0.

    python tutorials/05_eso.py                           # ~1 min on a laptop CPU: trains a small Eso-LM first
    python tutorials/05_eso.py --ckpt out_eso/ckpt.pt    # or use a `train.py --family eso` checkpoint
    python tutorials/05_eso.py --quick                   # seconds (the tests)

Draws the binomial unmask schedule for several alpha0 and counts the network calls it costs
-> 05_unmask_schedule.png; trains Eso-LM (alpha0 = 1, as the paper's runs), then samples at alpha0 = 1 and 0.5,
records when each position gets decoded, and checks the KV-cached sampler against the uncached one
-> 05_decode_order.png.
"""
import time

import lesson_utils as lu
import numpy as np
import torch

from nanodllm import eso, noise


def decode_order(model, L, alpha0, steps, seed):
    """Sample one sequence -> (tokens (L,), the network call (1, 2, ...) at which each position was decoded, nfe)."""
    calls = []
    x, nfe = eso.sample(model, 1, L, steps=steps, alpha0=alpha0, generator=torch.Generator().manual_seed(seed),
                        callback=lambda s: calls.append(s[0] != model.cfg.mask_id))
    decoded = torch.stack(calls)                                               # (nfe, L) bool: clean after call k
    return x[0], decoded.float().argmax(0) + 1, nfe                            # first call where it is clean


def main(argv=None):
    args = lu.parser(__doc__, ckpt='one').parse_args(argv)

    # 1) the unmask schedule: how many tokens each diffusion step reveals, then the sequential tail
    L_s = 64 if args.quick else 256
    draws = 2 if args.quick else 20
    g = torch.Generator().manual_seed(args.seed)
    fig, axes = lu.plt.subplots(1, 2, figsize=(11.5, 4))
    for alpha0, color in ((1.0, 'navy'), (0.5, 'darkorange'), (0.125, 'crimson')):
        counts = eso.unmask_schedule(L_s, 64, alpha0, g)
        tail = L_s - sum(counts)
        per_call = counts + [1] * tail
        axes[0].step(np.arange(1, len(per_call) + 1), np.cumsum(per_call), where='post', color=color,
                     label=f"α₀ = {alpha0}: {len(counts)} diffusion calls + {tail} sequential = {len(per_call)}")
        print(f"alpha0 = {alpha0}: tokens per diffusion step {counts[:12]}{' ...' if len(counts) > 12 else ''}, "
              f"then a tail of {tail} one-token calls")
    axes[0].set_xscale('log')
    axes[0].set_xlabel('network call')
    axes[0].set_ylabel(f'tokens decoded (of L = {L_s})')
    axes[0].set_title('Binomial unmask schedule, T = 64 steps', fontsize=10)
    axes[0].legend(fontsize=8)
    alphas = np.linspace(0, 1, 6 if args.quick else 11)
    for T, marker in ((16, 'o'), (64, 's'), (256, '^')):
        schedules = [[eso.unmask_schedule(L_s, T, a, g) for _ in range(draws)] for a in alphas]
        nfe = [np.mean([L_s - sum(c) + len(c) for c in runs]) for runs in schedules]
        axes[1].plot(alphas, nfe, marker + '-', ms=4, label=f'NFE, T = {T}')
        if T == 64:
            simulated = [np.mean([sum(c) for c in runs]) for runs in schedules]
    n_diff = L_s * (1 - (1 - alphas) / (1 - alphas * noise.EPS))
    axes[1].plot(alphas, n_diff, 'k:', label='tokens decoded by diffusion: L(1 - (1-α₀)/(1-α₀ε))')
    axes[1].plot(alphas, simulated, 'kx', label='... the same, counted in the T = 64 schedules')
    print('tokens decoded by diffusion, formula vs mean of the T = 64 schedules: '
          + ', '.join(f"α0={a:.1f}: {f:.1f}/{m:.1f}" for a, f, m in zip(alphas, n_diff, simulated)))
    axes[1].set_xlabel('α₀ at sampling time (0 = AR, 1 = masked diffusion)')
    axes[1].set_ylabel('network calls (or tokens) per sample')
    axes[1].set_title(f'What α₀ costs: L = {L_s}, mean of {draws} schedules', fontsize=10)
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    lu.savefig(fig, args, '05_unmask_schedule.png')

    # 2) a trained model: the clean-first order of one training example
    if args.ckpt:
        model, _, options, text = lu.load(args.ckpt, 'eso')
    else:
        text = lu.Text()
        steps = args.train_steps or (10 if args.quick else 1000)
        model, _ = lu.train('eso', text, steps=steps, seed=args.seed, log_every=0 if args.quick else 200)
        options = {}
    print(f"validation NELBO {lu.val_loss('eso', model, text, options, batches=2 if args.quick else 8):.3f} nats/token "
          f"(an upper bound that depends on the random order)")
    L = min(model.cfg.seq_len, 64)
    x0 = text.val_batch(1, L)[0]
    torch.manual_seed(args.seed)
    masked = torch.rand(L) < 0.5
    sort_idx = (masked.float() + 0.9 * torch.rand(L)).argsort()
    print("  training example, t = 0.5: " + text.show(x0.masked_fill(masked, model.cfg.mask_id), model.cfg.mask_id))
    print("  sorted clean-first:        " + text.show(x0.masked_fill(masked, model.cfg.mask_id)[sort_idx],
                                                      model.cfg.mask_id))

    # 3) the KV cache inside diffusion: same samples, fewer positions through the network per call
    steps = 16 if args.quick else 64
    for use_cache in (True, False):
        t0 = time.time()
        xs, nfe = eso.sample(model, 4, L, steps=steps, alpha0=1.0, use_cache=use_cache,
                             generator=torch.Generator().manual_seed(args.seed))
        if use_cache:
            cached = xs
        print(f"use_cache={use_cache}: {nfe} network calls for T = {steps}, {time.time() - t0:.2f}s")
    print(f"same samples with and without the KV cache: {torch.equal(cached, xs)}")

    # 4) the decode order at alpha0 = 1 (random order) and alpha0 = 0.5 (random, then a left-to-right tail)
    rows, cols = 4, L // 4
    fig, axes = lu.plt.subplots(2, 1, figsize=(11, 5.6))
    for ax, alpha0 in zip(axes, (1.0, 0.5)):
        x, when, nfe = decode_order(model, L, alpha0, steps, args.seed)
        im = ax.imshow(when.view(rows, cols).numpy(), cmap='viridis')
        # the sequential tail: the last calls decode one token each, always the leftmost one still masked; walking
        # back from the last call, stop at the first call that breaks this (a diffusion step)
        tail, right = 0, L
        while alpha0 < 1 and tail < nfe:
            decoded = (when == nfe - tail).nonzero().flatten()
            if len(decoded) != 1 or decoded.item() >= right:
                break
            tail, right = tail + 1, decoded.item()
        for i in (when > nfe - tail).nonzero().flatten().tolist():
            ax.add_patch(lu.plt.Rectangle((i % cols - 0.5, i // cols - 0.5), 1, 1, fill=False, ec='red', lw=1.5))
        for i, ch in enumerate(text.cells(x)):
            ax.text(i % cols, i // cols, ch, ha='center', va='center', fontsize=9, family='monospace',
                    color='white' if when[i] < 0.6 * nfe else 'black')
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f'α₀ = {alpha0}: {nfe} network calls (T = {steps}); colour = the call that decoded the position'
                     + (f'; red: the sequential tail, {tail} calls left to right' if tail else ''), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
        print(f"alpha0 = {alpha0}: {nfe} calls ({tail} in the sequential tail): {text.show(x)}")
    lu.savefig(fig, args, '05_decode_order.png')


if __name__ == '__main__':
    main()
