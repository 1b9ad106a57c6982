"""Duo few-step generation on CPU (issue 20): quality against sampling steps after each DCD round, both tails.

    python benchmarks/duo_distill_cpu.py --judge runs/dd/judge/ckpt.pt --dcd runs/dd/dcd --mdlm runs/dd/mdlm/ckpt.pt \
        --curriculum runs/dd/duo_curriculum --plain runs/dd/duo --out benchmarks/results/duo_distill_cpu

Reads a finished `train.py --distill-from` out-dir: teacher-round0.pt is the base model, teacher-round{n+1}.pt the
student after round n, ckpt.pt the student after the last round (nanodllm/distill.py). Each model is sampled at
--steps with the ancestral and the greedy tail (spec §3.4), the base also at --base-steps, MDLM at --steps; every
setting is --num-samples samples of the training length, judged by the in-domain AR judge (nanodllm/quality.py:
gen PPL and unigram entropy). Rows are cached in <out>/rows.jsonl (a rerun measures only what is missing); then
table.md, quality_vs_steps.png and summary.json (the curriculum comparison (a) and the FLOPs) are written.
"""
import argparse
import glob
import json
import os
import re
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanodllm import quality  # noqa: E402
from nanodllm.checkpoint import load_checkpoint  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--judge', required=True)
p.add_argument('--dcd', required=True, help='the out-dir of train.py --distill-from')
p.add_argument('--mdlm', help='an MDLM checkpoint of the same budget, sampled at --steps')
p.add_argument('--plain', help='out-dirs (comma-separated, one per seed) of Duo runs without the curriculum')
p.add_argument('--curriculum', help='out-dirs (comma-separated) of Duo runs with --curriculum, the same FLOPs')
p.add_argument('--steps', default='4,8,16,32')
p.add_argument('--base-steps', type=int, default=256)
p.add_argument('--num-samples', type=int, default=64)
p.add_argument('--seed', type=int, default=0)
p.add_argument('--out', default='benchmarks/results/duo_distill_cpu')
a = p.parse_args()
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
os.makedirs(a.out, exist_ok=True)
steps = [int(s) for s in a.steps.split(',')]

# the models: (label, round = rounds of distillation behind it, path)
files = sorted(glob.glob(os.path.join(a.dcd, 'teacher-round*.pt')), key=lambda f: int(re.findall(r'\d+', f)[-1]))
models = [('base' if i == 0 else f'round {i}', i, f) for i, f in enumerate(files)]
models.append((f'round {len(files)}', len(files), os.path.join(a.dcd, 'ckpt.pt')))
settings = [(label, r, path, s, tail) for label, r, path in models for s in steps for tail in ('ancestral', 'greedy')]
settings += [('base', 0, files[0], a.base_steps, tail) for tail in ('ancestral', 'greedy')]
if a.mdlm:
    settings += [('MDLM', None, a.mdlm, s, None) for s in steps + [a.base_steps]]

judge = quality.load_judge(a.judge)
cache_path = os.path.join(a.out, 'rows.jsonl')
cache = {}
if os.path.exists(cache_path):
    for line in open(cache_path):
        r = json.loads(line)
        cache[(r['label'], r['steps'], r['tail'])] = r
loaded, rows = None, []
for label, rnd, path, s, tail in settings:
    key = (label, s, tail)
    if key not in cache:
        if loaded != path:
            model, ckpt = load_checkpoint(path)
            loaded = path
        kwargs = {} if tail is None else dict(noise_removal=tail)
        row = quality.evaluate_setting(model, ckpt, judge, a.num_samples, model.cfg.seq_len, s, seed=a.seed,
                                        **kwargs)
        row.update(label=label, round=rnd, tail=tail, ckpt=path, step=ckpt.get('step'), val_loss=ckpt.get('val_loss'))
        with open(cache_path, 'a') as f:
            f.write(json.dumps(row) + '\n')
        cache[key] = row
        print(f"{label:8s} T={s:4d} {tail or '':9s} gen PPL {row['gen_ppl']:8.2f}  entropy {row['entropy']:.3f}  "
              f"NFE {row['nfe']:.0f}", flush=True)
    rows.append(cache[key])

# the table, the summary, the plot; the judge's scale: real held-out text and the same bytes shuffled
ref_path = os.path.join(a.out, 'reference.json')
if not os.path.exists(ref_path):
    ckpt0 = torch.load(files[0], weights_only=True, map_location='cpu')
    json.dump(quality.reference(judge, ckpt0['args']['data'], ckpt0['tokenizer'], a.num_samples, rows[0]['length'],
                                 a.seed), open(ref_path, 'w'), indent=1)
ref = json.load(open(ref_path))
base256 = {t: cache[('base', a.base_steps, t)]['gen_ppl'] for t in ('ancestral', 'greedy')}
lines = [f"Judge: {judge.name}. {a.num_samples} samples of {rows[0]['length']} tokens per setting, seed {a.seed}. "
         f"Base Duo at {a.base_steps} steps: gen PPL {base256['ancestral']:.2f} (ancestral), "
         f"{base256['greedy']:.2f} (greedy tail). The judge on {ref['n']} blocks of real held-out text: gen PPL "
         f"{ref['real_ppl']:.2f} (entropy {ref['real_entropy']:.3f}); the same bytes shuffled: "
         f"{ref['shuffled_ppl']:.2f}.", '',
         '| model | tail | ' + ' | '.join(f'T={s}' for s in steps) + ' |', '|---|---|' + '---|' * len(steps)]
match = {}
for label, rnd, _ in models + ([('MDLM', None, None)] if a.mdlm else []):
    for tail in (('ancestral', 'greedy') if label != 'MDLM' else (None,)):
        cells = [cache[(label, s, tail)] for s in steps]
        lines.append(f"| {label} | {tail or '-'} | " + ' | '.join(f"{c['gen_ppl']:.1f} ({c['entropy']:.2f})"
                                                               for c in cells) + ' |')
        ok = [s for s, c in zip(steps, cells) if c['gen_ppl'] <= base256['ancestral']]
        match[f"{label} {tail or ''}".strip()] = ok[0] if ok else None
lines += ['', 'Cells: gen PPL (entropy). MDLM at '
          f"{a.base_steps} steps: {cache[('MDLM', a.base_steps, None)]['gen_ppl']:.2f}" if a.mdlm else '', '',
          f'Fewest steps (of {steps}) at or below the base\'s {a.base_steps}-step ancestral gen PPL:', '']
lines += [f"- {k}: {v if v else 'none'}" for k, v in match.items()]

summary = dict(judge=judge.name, num_samples=a.num_samples, seed=a.seed, base_steps=a.base_steps,
               base_gen_ppl=base256, steps_to_match_base=match, reference=ref)
keys = ('val_loss', 'step', 'tokens', 'train_flops', 'seconds', 'flops_per_token', 'args')
summary['dcd'] = {k: v for k, v in json.load(open(os.path.join(a.dcd, 'results.json'))).items() if k in keys}
for name, dirs in (('plain', a.plain), ('curriculum', a.curriculum)):  # comma-separated out-dirs, one per seed
    for d in (dirs or '').split(','):
        if d and os.path.exists(os.path.join(d, 'results.json')):
            res = json.load(open(os.path.join(d, 'results.json')))
            summary.setdefault(name, []).append(dict({k: res[k] for k in keys}, dir=d))
if 'dcd' in summary:  # a DCD step runs the student forward and backward (3 F) and the teacher forward (F)
    summary['dcd']['train_flops_with_teacher'] = summary['dcd']['train_flops'] * 4 / 3
    base_dir = os.path.dirname(os.path.abspath(json.load(open(os.path.join(a.dcd, 'results.json')))['args']
                                               ['distill_from']))
    res = json.load(open(os.path.join(base_dir, 'results.json')))
    summary['base'] = {k: res[k] for k in ('val_loss', 'step', 'tokens', 'train_flops', 'seconds')}
    summary['dcd']['fraction_of_base_flops'] = summary['dcd']['train_flops_with_teacher'] / res['train_flops']
    lines += ['', f"Training FLOPs: base {res['train_flops']:.3g}; DCD {summary['dcd']['train_flops_with_teacher']:.3g}"
              f" (student 3F + teacher F per token) = {100 * summary['dcd']['fraction_of_base_flops']:.0f}% of the "
              f"base. Validation NELBO: base {res['val_loss']:.4f}, after DCD {summary['dcd']['val_loss']:.4f}."]
if 'plain' in summary and 'curriculum' in summary:
    def seeds(runs):
        v = [r['val_loss'] for r in runs]
        return (', '.join(f"{x:.4f} (seed {r['args']['seed']})" for x, r in zip(v, runs))
                + f"; mean {sum(v) / len(v):.4f}")
    lines += ['', f"Curriculum at equal training FLOPs ({summary['plain'][0]['train_flops']:.3g} each): validation "
              f"NELBO with {seeds(summary['curriculum'])}; without {seeds(summary['plain'])}."]
open(os.path.join(a.out, 'table.md'), 'w').write('\n'.join(lines) + '\n')
json.dump(summary, open(os.path.join(a.out, 'summary.json'), 'w'), indent=1)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
cmap = plt.get_cmap('viridis')
for ax, tail in zip(axes, ('ancestral', 'greedy')):
    for label, rnd, _ in models:
        ax.plot(steps, [cache[(label, s, tail)]['gen_ppl'] for s in steps], 'o-', color=cmap(rnd / max(1, len(files))),
                label=label)
    if a.mdlm:
        ax.plot(steps, [cache[('MDLM', s, None)]['gen_ppl'] for s in steps], 's--', color='tab:red', label='MDLM')
    ax.axhline(base256['ancestral'], color='gray', ls=':', label=f'base Duo, {a.base_steps} steps')
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel('sampling steps')
    ax.set_title(f'{tail} tail' if tail == 'greedy' else 'ancestral')
    ax.grid(alpha=0.3)
axes[0].set_ylabel('gen PPL (in-domain AR judge)')
axes[1].legend(fontsize=8)
fig.suptitle('Duo + discrete consistency distillation on CPU: quality against steps, per round')
fig.tight_layout()
fig.savefig(os.path.join(a.out, 'quality_vs_steps.png'), dpi=120)
print('\n'.join(lines))
