"""Lesson 08: sample quality and the speed-quality Pareto frontier.

    python tutorials/08_quality.py                 # ~2 min on a laptop CPU: trains a judge and four small models first
    python tutorials/08_quality.py --judge runs/judge/ckpt.pt --ckpt out/ckpt.pt   # your checkpoints instead
    python tutorials/08_quality.py --quick         # seconds (the tests)

Trains a judge (an AR model of its own: another seed, longer windows, more steps) and the four families, saves them
as train.py checkpoints under --work-dir, and evaluates them with nanodllm/quality.py and nanodllm/pareto.py, the code behind
`sample.py --eval` and `sweep.py --pareto`: generative perplexity under the judge, unigram
entropy, network calls and tokens/s, over sampling steps ->
08_judge.png (what a judge rewards: gen PPL against entropy) and 08_pareto.png (the speed-quality frontier).
"""
import os

import lesson_utils as lu

from nanodllm import pareto, quality
from nanodllm.checkpoint import load_checkpoint
from nanodllm.families import FAMILIES

NAMES = {'ar': 'AR', 'mdlm': 'MDLM', 'duo': 'Duo', 'eso': 'Eso-LM'}


def load_judge(spec):
    """nanodllm/quality.py:load_judge, with its one-line ValueError as the lesson's one-line error."""
    try:
        return quality.load_judge(spec)
    except ValueError as e:
        lu.fail(str(e))


def models(args, text):
    """-> ({family: checkpoint path}, judge): the user's checkpoints and judge, and train.py-style checkpoints of
    models trained here for the rest (saved under --work-dir, so that sample.py and sweep.py --pareto read them)."""
    judge = load_judge(args.judge) if args.judge else None   # a bad --judge fails now, not after the training
    ckpts = {}
    for path in args.ckpt:
        _, name, _, _ = lu.load(path)
        ckpts[name] = path
    steps = args.train_steps or (8 if args.quick else 600)
    batches = 1 if args.quick else 8                 # validation batches of 16 sequences
    for name in FAMILIES:
        if name not in ckpts:
            model, _ = lu.train(name, text, steps=steps, seed=args.seed, log_every=0 if args.quick else 300)
            ckpts[name] = lu.save(os.path.join(args.work_dir, name, 'ckpt.pt'), model, name, text, step=steps,
                                  val=lu.val_loss(name, model, text, batches=batches))
    if judge is None:  # the judge: AR again, but not one of the judged models (another seed, 128-byte windows, longer)
        judge_steps = 8 if args.quick else 1500
        model, _ = lu.train('ar', text, seq_len=128, batch_size=8, steps=judge_steps, seed=args.seed + 7,
                            log_every=0 if args.quick else 500)
        judge = load_judge(lu.save(os.path.join(args.work_dir, 'judge', 'ckpt.pt'), model, 'ar', text,
                                   step=judge_steps, val=lu.val_loss('ar', model, text, batches=batches)))
    return ckpts, judge


def main(argv=None):
    p = lu.parser(__doc__, ckpt='many')
    p.add_argument('--judge', default='', help='the judge: an AR checkpoint (train.py --family ar) or hf:NAME '
                   '(default: train one here)')
    p.add_argument('--work-dir', default=None, help='where the checkpoints trained here and pareto.json go '
                   '(default: runs/lesson08, or runs/lesson08_quick with --quick)')
    args = p.parse_args(argv)
    args.work_dir = args.work_dir or os.path.join('runs', 'lesson08_quick' if args.quick else 'lesson08')
    text = lu.Text()
    ckpts, judge = models(args, text)
    print(f"judge: {judge.name}")
    n = 4 if args.quick else 32                      # samples per setting
    steps_list = [2, 4] if args.quick else [4, 8, 16, 32, 64]

    # 1) what the judge rewards: real text, the same bytes shuffled, and AR samples from greedy to hot
    model, ckpt = load_checkpoint(ckpts['ar'])
    L = min(load_checkpoint(path)[0].cfg.seq_len for path in ckpts.values())    # tokens per sample
    ref = quality.reference(judge, ckpt['args']['data'], ckpt['tokenizer'], n, L, seed=args.seed)
    points = [('real text', ref['real_ppl'], ref['real_entropy']),
              ('real text, bytes shuffled', ref['shuffled_ppl'], ref['shuffled_entropy'])]
    temperatures = (0.0, 1.0) if args.quick else (0.0, 0.5, 0.7, 1.0, 1.3)
    for temperature in temperatures:
        row = quality.evaluate_setting(model, ckpt, judge, n, L, temperature=temperature, seed=args.seed)
        name = 'greedy' if temperature == 0 else f'temperature {temperature}'
        points.append((f'AR, {name}' + (f": {row['sample'][:20]!r}..." if temperature == 0 else ''), row['gen_ppl'],
                       row['entropy']))
        print(f"AR, {name}: {row['sample'][:56]!r}")
    print(f"{'':50s} {'gen PPL':>8s} {'entropy':>8s}")
    for name, ppl, entropy in points:
        print(f"{name:50s} {ppl:8.2f} {entropy:8.3f}")
    fig, ax = lu.plt.subplots(figsize=(7, 4.4))
    ax.plot([p[1] for p in points[2:]], [p[2] for p in points[2:]], 'o-', color='C0', lw=1, label='AR samples')
    ax.plot(*points[0][1:], 's', color='k', ms=7, label='real held-out text')
    ax.plot(*points[1][1:], 's', color='C3', ms=7, label='the same bytes, shuffled')
    for name, ppl, entropy in points:
        ax.annotate(name, (ppl, entropy), fontsize=7, xytext=(5, 3), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlim(right=ax.get_xlim()[1] * 3)
    ax.set_xlabel('generative perplexity under the judge (lower = more likely to it)')
    ax.set_ylabel('unigram entropy per sample (nats)')
    ax.set_title(f'What a judge rewards: {n} texts of {L} bytes per point', fontsize=10)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, loc='lower right')
    lu.savefig(fig, args, '08_judge.png')

    # 2) the frontier: every family over the step counts, as `sweep.py --pareto --ckpts ...` does it
    result = pareto.run_pareto([(NAMES[f], ckpts[f]) for f in FAMILIES], judge, steps_list, num_samples=n,
                                 batch_size=n, length=L, seed=args.seed)
    print('\n' + pareto.pareto_table(result))
    print('wrote ' + ', '.join(pareto.write_pareto(result, args.work_dir)) + ' (what the command writes)')
    rows = result['rows']
    by_calls = [dict(r, tok_s=1 / r['nfe']) for r in rows]     # "faster" = fewer network calls per sample
    for view, these in (('tokens/s on this CPU', rows), ('network calls', by_calls)):
        overall = pareto.pareto_frontier([dict(r, label='all') for r in these])      # across the families
        print(f"on the frontier of all families by {view} (fastest first): " + ', '.join(
            f"{r['label']} {pareto.setting_name(r)}" for r, on in
            sorted(zip(these, overall), key=lambda ro: -ro[0]['tok_s']) if on))
    fig, axes = lu.plt.subplots(1, 2, figsize=(12, 4.6))
    for i, family in enumerate(FAMILIES):
        for ax, these, key in ((axes[0], rows, 'tok_s'), (axes[1], by_calls, 'nfe')):
            mine = [r for r in these if r['label'] == NAMES[family]]
            front = [r for r, on in zip(mine, pareto.pareto_frontier(mine)) if on]
            front.sort(key=lambda r: r['gen_ppl'])
            ax.plot([r['gen_ppl'] for r in mine], [r[key] for r in mine], 'o', color=f'C{i}', alpha=0.4, ms=5)
            ax.plot([r['gen_ppl'] for r in front], [r[key] for r in front], 'o-', color=f'C{i}', label=NAMES[family])
            for r in mine:
                ax.annotate(f"{r['steps']}" if r['steps'] else 'AR', (r['gen_ppl'], r[key]), fontsize=7,
                            color=f'C{i}', xytext=(3, 3), textcoords='offset points')
    for ax in axes:
        ax.axvline(result['reference']['real_ppl'], color='k', ls='--', lw=1, label='real text')
        ax.set_xscale('log')
        ax.set_yscale('log')
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers on log axes
            axis.set_major_formatter(lu.plt.FormatStrFormatter('%g'))
            axis.set_minor_formatter(lu.plt.NullFormatter())
        ax.set_xticks([t for t in (2, 5, 10, 20, 50, 100, 200, 500) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]])
        ax.set_xlabel('generative perplexity under the judge (lower is better)')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
    axes[0].set_ylabel('generated tokens per second (higher is faster)')
    axes[0].set_title(f'Measured on this CPU ({n} samples of {L} tokens; numbers: steps)', fontsize=10)
    axes[1].set_yticks([t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256) if min(r['nfe'] for r in rows) / 2 <= t
                        <= max(r['nfe'] for r in rows) * 2])
    axes[1].invert_yaxis()
    axes[1].set_ylabel('network calls per sample (fewer is up)')
    axes[1].set_title('Counted in network calls (the cost when a call is latency-bound)', fontsize=10)
    lu.savefig(fig, args, '08_pareto.png')


if __name__ == '__main__':
    main()
