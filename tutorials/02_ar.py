"""Lesson 02: the autoregressive baseline: shifted NLL, left-to-right sampling, and the KV cache.

    python tutorials/02_ar.py                       # ~1 min on a laptop CPU: trains a small AR model first
    python tutorials/02_ar.py --ckpt out/ckpt.pt    # or use a checkpoint of `python train.py`
    python tutorials/02_ar.py --quick               # seconds (the tests)

Trains AR on Shakespeare bytes, checks that cached and uncached decoding give the same logits and the same samples,
and times both against the sample length -> 02_ar.png.
"""
import math
import time

import lesson_utils as lu
import torch

from nanodllm import ar


def main(argv=None):
    args = lu.parser(__doc__, ckpt='one').parse_args(argv)
    if args.ckpt:
        model, _, _, text = lu.load(args.ckpt, 'ar')
        losses = None
    else:
        text = lu.Text()
        steps = args.train_steps or (10 if args.quick else 1000)
        model, losses = lu.train('ar', text, steps=steps, seed=args.seed, log_every=0 if args.quick else 200)
    V, L = model.cfg.vocab_size, model.cfg.seq_len
    val = lu.val_loss('ar', model, text, batches=2 if args.quick else 8)
    print(f"validation NLL {val:.3f} nats/token (uniform guess: log(V-1) = {math.log(V - 1):.3f}); "
          f"each sequence of {L} tokens gives {L - 1} predictions (the first token is never scored)")

    # the KV cache is exact: feeding one token at a time through the cache gives the full causal forward's logits
    x = text.val_batch(1, L)
    with torch.no_grad():
        full = model(x, attn='causal')                                          # (1, L, V) in one call
        cache = model.new_cache()
        steps = [model(x[:, i:i + 1], attn='causal', cache=cache) for i in range(L)]  # L calls of 1 token
    cached = torch.cat(steps, dim=1)
    print(f"KV cache vs full causal forward, max |logit difference| over {L} positions: "
          f"{(cached - full).abs().max().item():.1e}")

    # sampling from a prompt: BOS (the tokenizer's, '\n' for bytes) + 'ROMEO:'
    prompt = torch.tensor([text.tokenizer.bos] + text.tokenizer.encode('ROMEO:'))
    n = 2 if args.quick else 4
    samples = {}
    for use_cache in (True, False):
        t0 = time.time()
        xs, nfe = ar.sample(model, n, min(L, 32) if args.quick else L, prompt=prompt, use_cache=use_cache,
                            generator=torch.Generator().manual_seed(args.seed))
        samples[use_cache] = xs
        print(f"use_cache={use_cache}: {nfe} network calls, {time.time() - t0:.2f}s")
    print(f"same samples with and without the cache: {torch.equal(samples[True], samples[False])}")
    for row in samples[True][:2]:
        print('  ' + text.show(row))

    # time per sample against its length: the cache makes each call cost one token instead of the whole prefix
    lengths = [8, 16, 32] if args.quick else [16, 32, 64, 128, 256]
    times = {True: [], False: []}
    for length in lengths:
        for use_cache in (True, False):
            t0 = time.time()
            ar.sample(model, n, length, prompt=prompt[:1], use_cache=use_cache,
                      generator=torch.Generator().manual_seed(0))
            times[use_cache].append(time.time() - t0)
    print('length: ' + ', '.join(f"{length}: {a:.2f}s cached / {b:.2f}s not"
                                 for length, a, b in zip(lengths, times[True], times[False])))

    fig, axes = lu.plt.subplots(1, 2, figsize=(11, 3.8))
    if losses is not None:
        axes[0].plot(losses, lw=0.8, label='train loss (one batch)')
    axes[0].axhline(math.log(V - 1), color='gray', ls=':', label=f'uniform: log {V - 1}')
    axes[0].axhline(val, color='crimson', ls='--', label=f'validation NLL {val:.2f}')
    axes[0].set_xlabel('step')
    axes[0].set_ylabel('NLL (nats / token)')
    axes[0].set_title('AR: shifted next-token NLL')
    axes[0].legend(fontsize=8)
    for use_cache, style in ((True, 'o-'), (False, 's--')):
        axes[1].plot(lengths, times[use_cache], style, label='KV cache' if use_cache else 'no cache (rerun prefix)')
    axes[1].set_xlabel('sample length (tokens)')
    axes[1].set_ylabel(f'seconds for {n} samples')
    axes[1].set_title('Sampling time: one network call per token either way')
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    lu.savefig(fig, args, '02_ar.png')


if __name__ == '__main__':
    main()
