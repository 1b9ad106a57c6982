"""Lesson 06: sampling: steps against quality and speed, and the caches, for all four families.

    python tutorials/06_sampling.py                        # ~1-2 min on a laptop CPU: trains four small models first
    python tutorials/06_sampling.py --ckpt out/ckpt.pt --ckpt out_mdlm/ckpt.pt   # use your checkpoints for those
    python tutorials/06_sampling.py --quick                # seconds (the tests)

Samples the same prompt at 8, 32 and 256 steps with every family, times it, counts the network calls, and scores
the samples with nanodllm/quality.py under the AR model trained here (a tiny judge: lower generative perplexity =
more Shakespeare-like to it; lesson 08 trains a separate judge) ->
06_steps.png (the texts), 06_speed_quality.png (quality against time), 06_denoising.gif (the animation).
"""
import math
import os
import tempfile
import time

import lesson_utils as lu
import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter

from nanodllm import quality
from nanodllm.families import FAMILIES, get_family

NAMES = {'ar': 'AR', 'mdlm': 'MDLM', 'duo': 'Duo', 'eso': 'Eso-LM'}


def judge_samples(judge, text, content):
    """Decode each row of content (n, C) and score it under the judge (nanodllm/quality.py) -> (gen PPL pooled over
    the samples, standard error of the per-sample NLL per token: the error bar of log gen PPL, entropy)."""
    texts = [text.tokenizer.decode(row) for row in content]
    per_sample = [nll / n for nll, n in (quality.judge_nll(judge, [t]) for t in texts)]
    sem = float(np.std(per_sample, ddof=1) / math.sqrt(len(per_sample)))
    return quality.gen_ppl(judge, texts), sem, quality.unigram_entropy(content)


def main(argv=None):
    args = lu.parser(__doc__, ckpt='many').parse_args(argv)
    models, text = {}, None
    for path in args.ckpt:
        model, name, options, ckpt_text = lu.load(path)
        if text is not None and ckpt_text.tokenizer.name != text.tokenizer.name:
            lu.fail(f"{path} uses the {ckpt_text.tokenizer.name} tokenizer but another --ckpt uses "
                    f"{text.tokenizer.name}: pass checkpoints trained with the same --tokenizer")
        models[name], text = (model, options), ckpt_text
    text = text or lu.Text()
    train_steps = args.train_steps or (8 if args.quick else 800)
    for name in FAMILIES:  # train what no checkpoint provided
        if name not in models:
            model, _ = lu.train(name, text, steps=train_steps, seed=args.seed, log_every=0 if args.quick else 400)
            models[name] = (model, {})
    with tempfile.TemporaryDirectory() as tmp:  # the AR model as a judge: a checkpoint, read as sample.py --eval does
        judge = quality.load_judge(lu.save(os.path.join(tmp, 'judge.pt'), models['ar'][0], 'ar', text))

    L = min(m.cfg.seq_len for m, _ in models.values())
    C = L - 1                                          # content tokens per sample: AR puts BOS in front of them
    n = 2 if args.quick else 16
    step_counts = (2, 4, 8) if args.quick else (8, 32, 256)
    prompt = torch.tensor(text.tokenizer.encode('ROMEO:'))
    bos = text.tokenizer.bos
    results, trajectories = {}, {}
    for name, (model, options) in models.items():
        family = get_family(name)
        for steps in step_counts:
            if name == 'ar' and steps != step_counts[0]:   # AR has no steps: one network call per token
                results[name, steps] = results[name, step_counts[0]]
                continue
            states = []
            kwargs = dict(alpha0=options.get('alpha0', 1.0)) if name == 'eso' else {}
            t0 = time.time()
            x, nfe = family.sample(model, n, C + 1 if name == 'ar' else C, steps=steps,
                                   prompt=torch.cat([torch.tensor([bos]), prompt]) if name == 'ar' else prompt,
                                   generator=torch.Generator().manual_seed(args.seed),
                                   callback=lambda s: states.append(s[0].clone()), **kwargs)
            seconds = time.time() - t0
            content = x[:, 1:] if name == 'ar' else x                           # (n, C)
            ppl, sem, entropy = judge_samples(judge, text, content)
            results[name, steps] = dict(nfe=nfe, seconds=seconds, ppl=ppl, sem=sem, entropy=entropy,
                                        text=text.show(content[0]))
            if steps == step_counts[1] or name == 'ar':
                trajectories[name] = [s[1:] if name == 'ar' else s for s in states]
            r = results[name, steps]
            print(f"{NAMES[name]:6s} steps {steps:3d}: {r['nfe']:3d} calls, {r['seconds']:.2f}s, gen PPL "
                  f"{r['ppl']:.2f} (log ± {r['sem']:.3f}), entropy {r['entropy']:.2f} | {r['text']}")

    # the caches: same samples, fewer or cheaper network calls
    mdlm_model = models['mdlm'][0]
    for use_cache in (True, False):
        t0 = time.time()
        _, nfe = get_family('mdlm').sample(mdlm_model, n, C, steps=step_counts[-1], use_cache=use_cache,
                                           generator=torch.Generator().manual_seed(args.seed))
        print(f"MDLM {step_counts[-1]} steps, no-change cache {'on ' if use_cache else 'off'}: {nfe} calls, "
              f"{time.time() - t0:.2f}s")
    for use_cache in (True, False):
        t0 = time.time()
        _, nfe = get_family('eso').sample(models['eso'][0], n, C, steps=step_counts[-1], use_cache=use_cache,
                                          generator=torch.Generator().manual_seed(args.seed))
        print(f"Eso-LM {step_counts[-1]} steps, KV cache {'on ' if use_cache else 'off'}: {nfe} calls, "
              f"{time.time() - t0:.2f}s")

    # figure 1: the texts
    width = 32
    fig, ax = lu.plt.subplots(figsize=(12, 5.2))
    ax.axis('off')
    for i, name in enumerate(FAMILIES):
        ax.text(-0.02, 1 - (i + 0.5) / 4, NAMES[name], ha='right', va='center', fontsize=11, weight='bold',
                transform=ax.transAxes)
        for j, steps in enumerate(step_counts):
            r = results[name, steps]
            lines = [r['text'][k:k + width] for k in range(0, len(r['text']), width)]
            head = 'no steps' if name == 'ar' else f'{steps} steps'
            ax.text(j / 3 + 0.01, 1 - i / 4 - 0.02, f"{head} · {r['nfe']} calls · {1000 * r['seconds'] / n:.0f} ms · "
                    f"gen PPL {r['ppl']:.1f}", fontsize=8, color='gray', va='top', transform=ax.transAxes)
            ax.text(j / 3 + 0.01, 1 - i / 4 - 0.08, '\n'.join(lines), fontsize=9, family='monospace', va='top',
                    transform=ax.transAxes)
    ax.set_title(f"The prompt 'ROMEO:' continued by each family ({n} samples each, the first shown; ms: time per "
                 f"sample; ⏎ = newline)", fontsize=10)
    lu.savefig(fig, args, '06_steps.png')

    # figure 2: quality against time, and network calls against steps
    fig, axes = lu.plt.subplots(1, 2, figsize=(11.5, 4))
    for name in FAMILIES:
        rs = [results[name, s] for s in step_counts]
        secs, ppls = [r['seconds'] / n for r in rs], [r['ppl'] for r in rs]
        yerr = [[p * (1 - math.exp(-r['sem'])) for p, r in zip(ppls, rs)],    # ± one s.e. of log gen PPL
                [p * (math.exp(r['sem']) - 1) for p, r in zip(ppls, rs)]]
        axes[0].errorbar(secs, ppls, yerr=yerr, fmt='o-', capsize=3, label=NAMES[name])
        if name != 'ar':
            for s, x_, y_ in zip(step_counts, secs, ppls):
                axes[0].annotate(str(s), (x_, y_), textcoords='offset points', xytext=(4, 4), fontsize=7)
        axes[1].plot(step_counts, [r['nfe'] for r in rs], 'o-', label=NAMES[name])
    axes[0].set_xscale('log')
    axes[0].set_yscale('log')
    axes[0].yaxis.set_major_formatter(lu.plt.FormatStrFormatter('%g'))  # plain numbers on the log axis
    axes[0].yaxis.set_minor_formatter(lu.plt.FormatStrFormatter('%g'))
    axes[0].set_xlabel('seconds per sample')
    axes[0].set_ylabel(f'gen PPL under the tiny AR judge ({n} samples)')
    axes[0].set_title('Quality against speed (numbers: steps)', fontsize=10)
    axes[1].plot(step_counts, step_counts, 'k:', lw=1, label='calls = steps')
    axes[1].set_xscale('log')
    axes[1].set_yscale('log')
    axes[1].set_xlabel('sampling steps')
    axes[1].set_ylabel('network calls (NFE)')
    axes[1].set_title(f'Network calls for a {C}-token sample', fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lu.savefig(fig, args, '06_speed_quality.png')

    # figure 3: the animation, every family at the middle step count, progress matched frame by frame
    frames = 6 if args.quick else 30
    fig, ax = lu.plt.subplots(figsize=(4.4, 4.2), dpi=80)
    ax.axis('off')
    handles = {}
    for i, name in enumerate(FAMILIES):
        ax.text(0, 1 - i / 4, f"{NAMES[name]} ({len(trajectories[name])} calls)", fontsize=10, weight='bold',
                va='top', transform=ax.transAxes)
        handles[name] = ax.text(0, 1 - i / 4 - 0.06, '', fontsize=9, family='monospace', va='top',
                                transform=ax.transAxes)
    title = ax.set_title('', fontsize=10)

    def draw(f):
        for name, states in trajectories.items():
            s = text.show(states[round(f / (frames - 1) * (len(states) - 1))], mask_id=models[name][0].cfg.mask_id)
            handles[name].set_text('\n'.join(s[k:k + width] for k in range(0, len(s), width)))
        title.set_text(f"'ROMEO:', {step_counts[1]} steps: {100 * f // (frames - 1)}% of the calls")
        return list(handles.values()) + [title]

    path = f"{args.out_dir}/06_denoising.gif"
    FuncAnimation(fig, draw, frames=frames, blit=False).save(path, writer=PillowWriter(fps=5))
    lu.plt.close(fig)
    print(f"wrote {path}")


if __name__ == '__main__':
    main()
