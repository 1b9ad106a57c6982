"""The CPU study's frontier under two judges, side by side: the in-domain AR judge (a nanodllm AR `tiny` trained on
the same Shakespeare bytes: the committed rows of benchmarks/results/pareto_cpu/) and a real general-English LM,
SmolLM2-135M-Instruct (the GGUF of tests/fetch_judge.sh; rows of benchmarks/pareto_smollm.py), setting by setting.

Settings are matched by (family, steps, alpha0, temperature, top-p). The speed axis of both frontiers is the quiet
machine's tok/s of the committed rows: the sampler and its settings are the same, only the judge changes. Whether the
samples are the very same ones is checked (each row keeps its first sample's first 300 characters) and reported:
checkpoints retrained at another commit, or another sample count, give other samples. Writes <out>/judges.md (both
PPLs per setting, ranks, frontiers, agreement), judges.json, judges.png and pareto_smollm.png.

    python benchmarks/pareto_judges.py --in-domain benchmarks/results/pareto_cpu/pareto_all_budgets.json \
        --smollm runs/sweep_cpu/pareto/pareto.json --budget 5e11 --out benchmarks/results/pareto_cpu_smollm
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanodllm import pareto  # noqa: E402
from nanodllm.quality import write_json  # noqa: E402


def setting(r):
    return (r['label'], r['steps'], r.get('alpha0'), r['temperature'], r['top_p'])


def ranks(values):
    """-> rank of each value (1 = lowest), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--in-domain', required=True)
    p.add_argument('--smollm', required=True)
    p.add_argument('--budget', type=float, required=True)
    p.add_argument('--out', required=True)
    a = p.parse_args()
    ind, sml = json.load(open(a.in_domain)), json.load(open(a.smollm))
    by_setting = {setting(r): r for r in ind['rows'] if abs(r.get('budget', a.budget) / a.budget - 1) < 1e-6}
    rows = []
    for r in sml['rows']:
        q = by_setting.get(setting(r))
        if q is None:
            sys.exit(f"error: {setting(r)} has no row in {a.in_domain} at budget {a.budget:g}")
        rows.append(dict(q, ar_judge_ppl=q['gen_ppl'], smollm_ppl=r['gen_ppl'], smollm_judge_tokens=r['judge_tokens'],
                         smollm_tok_s_loaded=r['tok_s'], same_samples=r['sample'] == q['sample'],
                         same_entropy=abs(r['entropy'] - q['entropy']) < 1e-9))
    front_ar = pareto.pareto_frontier([dict(r, gen_ppl=r['ar_judge_ppl']) for r in rows])
    front_sm = pareto.pareto_frontier([dict(r, gen_ppl=r['smollm_ppl']) for r in rows])
    rank_ar, rank_sm = ranks([r['ar_judge_ppl'] for r in rows]), ranks([r['smollm_ppl'] for r in rows])
    rho = spearman([r['ar_judge_ppl'] for r in rows], [r['smollm_ppl'] for r in rows])
    labels = list(dict.fromkeys(r['label'] for r in rows))
    best = {j: sorted(labels, key=lambda l: min(r[j] for r in rows if r['label'] == l))
            for j in ('ar_judge_ppl', 'smollm_ppl')}
    ref_a, ref_s = ind['reference'], sml['reference']
    lines = [
        f"Checkpoints: the CPU sweep's compute-optimal run of each family at {a.budget:.2g} FLOPs "
        f"({', '.join(sorted({r['run'] for r in rows}))}); {sml['num_samples']} samples of {sml['length']} tokens per "
        f"setting, batch {sml['batch_size']}, seed {sml['seed']}. tok/s: the quiet machine's (the committed rows).",
        '',
        f"- in-domain AR judge: {ind['judge']}; real held-out text {ref_a['real_ppl']:.2f}, the same bytes shuffled "
        f"{ref_a['shuffled_ppl']:.1f}",
        f"- SmolLM2-135M-Instruct: {sml['judge']}; real held-out text {ref_s['real_ppl']:.2f}, the same bytes shuffled "
        f"{ref_s['shuffled_ppl']:.1f}",
        f"- the samples are the committed rows' samples in {sum(r['same_samples'] for r in rows)} of {len(rows)} "
        f"settings (first sample's first 300 characters equal), the entropy equal in "
        f"{sum(r['same_entropy'] for r in rows)}",
        f"- Spearman rank correlation of the two judges' gen PPL over the {len(rows)} settings: {rho:.3f}",
        f"- families by their best gen PPL: AR judge {' < '.join(best['ar_judge_ppl'])}; SmolLM "
        f"{' < '.join(best['smollm_ppl'])}",
        '',
        '| model | setting | NFE | tok/s | gen PPL, AR judge | rank | frontier | gen PPL, SmolLM2 | rank | frontier |',
        '|---|---|---|---|---|---|---|---|---|---|']
    for r, fa, fs, ra, rs in zip(rows, front_ar, front_sm, rank_ar, rank_sm):
        lines.append(f"| {r['label']} | {pareto.setting_name(r)} | {r['nfe']:.0f} | {r['tok_s']:,.0f} | "
                     f"{r['ar_judge_ppl']:.2f} | {ra:g} | {'yes' if fa else ''} | {r['smollm_ppl']:.1f} | {rs:g} | "
                     f"{'yes' if fs else ''} |")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, 'judges.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    write_json(os.path.join(a.out, 'judges.json'), dict(budget=a.budget, spearman=rho, families_by_best=best,
                                                        reference_ar_judge=ref_a, reference_smollm=ref_s,
                                                        rows=rows, frontier_ar_judge=front_ar,
                                                        frontier_smollm=front_sm))
    # the figure: each judge's frontier, drawn by the package (same speed axis), then PPL against PPL
    base = dict(sml, rows=[dict(r, gen_ppl=r['smollm_ppl']) for r in rows], frontier=front_sm)
    pareto.plot_pareto(base, os.path.join(a.out, 'pareto_smollm.png'))
    plot_judges(rows, ref_a, ref_s, rho, os.path.join(a.out, 'judges.png'))
    print('\n'.join(lines))
    print(f"wrote {a.out}/judges.md, judges.json, judges.png, pareto_smollm.png")


def plot_judges(rows, ref_a, ref_s, rho, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = list(dict.fromkeys(r['label'] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 5.4))
    notes = []
    for i, label in enumerate(labels):
        mine = [r for r in rows if r['label'] == label]
        ax.scatter([r['ar_judge_ppl'] for r in mine], [r['smollm_ppl'] for r in mine], color=f"C{i}", s=22,
                   label=label)
        notes += [(r['ar_judge_ppl'], r['smollm_ppl'], pareto.setting_name(r).replace('default', 'AR'), f"C{i}")
                  for r in mine]
    ax.scatter([ref_a['real_ppl']], [ref_s['real_ppl']], color='k', marker='*', s=60, label='real held-out text')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('gen PPL under the in-domain AR judge (bytes)')
    ax.set_ylabel('gen PPL under SmolLM2-135M-Instruct (its tokens)')
    ax.set_title(f"each sampler setting under two judges (Spearman {rho:.2f} over settings)", fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, loc='upper left')
    fig.tight_layout()
    pareto.place_labels(ax, notes)
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == '__main__':
    main()
