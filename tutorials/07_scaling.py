"""Lesson 07: FLOPs and scaling laws: counting F, a FLOP budget as steps, the iso-FLOP method, memory at 1.7B.

    python tutorials/07_scaling.py                              # ~1-2 min: runs `sweep.py --preset quick` first
    python tutorials/07_scaling.py --sweep-dir runs/sweep_cpu   # draw a finished sweep instead (`python sweep.py`)
    python tutorials/07_scaling.py --quick                      # seconds (the tests): one tiny train.py budget
                                                                #   instead of the sweep, fewer sizes counted

Counts the forward FLOPs of every size by structure and with torch's FLOP counter, checks budget -> steps on real
train.py runs, fits iso-FLOP parabolas to a loss surface whose optimum is known and to real runs, refits the paper's
optima into power laws and compute multipliers, and plans the memory of a 1.7B training step ->
07_flops.png, 07_isoflop.png, 07_laws.png, 07_memory.png.
"""
import json
import os
import subprocess
import sys
import tempfile

import lesson_utils as lu
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from nanodllm import flops, memory, scaling
from nanodllm.config import SIZES, get_config
from nanodllm.model import Model

LABELS = {'ar': 'AR', 'mdlm': 'MDLM (low-var)', 'mdlm-elbo': 'MDLM (NELBO)', 'duo': 'Duo', 'eso': 'Eso-LM (α0 = 1)'}
# the subprocesses import this checkout's nanodllm, one thread each unless you say otherwise (two threads per process
# on a busy CPU make a tiny model's step ~100x slower, waiting for each other)
ENV = dict(os.environ, PYTHONPATH=lu.ROOT, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
CPU_SIZES = ['zepto', 'atto', 'femto', 'pico', 'nano', 'micro', 'tiny', 'small']          # byte vocabulary, L = 256
LADDER = [s for s in SIZES if s not in CPU_SIZES and s != '1.7b']                          # the paper's, V = 32001
SHOWN = {'zepto', 'nano', 'micro', 'small', '6M', '113M', '1678M', '2121M'}                # named in 07_flops.png
# A loss surface whose compute-optimal size is known in closed form: Hoffmann et al. (2022, "Chinchilla"), their
# third fit: L(N, D) = E + A / N^alpha + B / D^beta, with D = C / 6N tokens at budget C.
CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


# -----------------------------------------------------------------------------
# 1) counting F

def counted(cfg):
    """torch's FLOP counter on one forward of one sequence, on the meta device (shapes only: no memory, no time)
    -> (FLOPs per token of the Linear layers (aten.mm, aten.addmm), FLOPs per token of everything else it counts:
    the attention scores QK^T and AV)."""
    with torch.device('meta'):
        model = Model(cfg)
        x = torch.zeros(1, cfg.seq_len, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(x, attn='full')
    per_op = {str(op): n for op, n in counter.get_flop_counts()['Global'].items()}
    linear = per_op.get('aten.mm', 0) + per_op.get('aten.addmm', 0)
    return linear / cfg.seq_len, (counter.get_total_flops() - linear) / cfg.seq_len


def count_sizes(quick):
    """F, the counter and N for the CPU sizes (byte vocabulary, L = 256) and the paper's ladder (V = 32001, L = 2048)."""
    rows = []
    for names, V, L in (((['zepto', 'nano', 'small'] if quick else CPU_SIZES), 257, 256),
                        ((['6M', '336M', '1678M'] if quick else LADDER), 32001, 2048)):
        for name in names:
            cfg = get_config(name, V, L)
            linear, scores = counted(cfg)
            rows.append(dict(name=name, cfg=cfg, N=flops.non_embedding_params(cfg),
                             F=flops.forward_flops_per_token(cfg), linear=linear, scores=scores, paper=V > 257))
    print(f"{'size':>6} {'V':>6} {'L':>5} {'N (non-emb.)':>13} {'F / token':>11} {'counter: Linear':>16} "
          f"{'+ scores':>10} {'F / 2N':>7}")
    for r in rows:
        c = r['cfg']
        print(f"{r['name']:>6} {c.vocab_size:>6} {c.seq_len:>5} {r['N']:>13,} {r['F']:>11.4g} {r['linear']:>16.4g} "
              f"{r['scores'] / r['F']:>+9.1%} {r['F'] / (2 * r['N']):>7.3f}")
    worst = max(abs(r['linear'] / r['F'] - 1) for r in rows)
    print(f"the counter's Linear FLOPs equal F to {worst:.1e} (relative) at every size: F counts exactly the matmuls of "
          f"the Linear layers, the per-sequence adaLN ones included; the attention scores are what it leaves out")
    return rows


def plot_flops(rows, args):
    fig, (ax_a, ax_b) = lu.plt.subplots(1, 2, figsize=(11.5, 4))
    paper = [r for r in rows if r['paper']]
    N = np.array([r['N'] for r in paper])
    ax_a.plot(N, [r['scores'] / r['F'] for r in paper], 'o', color='C3', label='torch FLOP counter, L = 2048')
    for L, ls in ((1024, ':'), (2048, '-'), (8192, '--')):   # 4 L d per layer: QK^T and AV, 2 L d each
        ax_a.plot(N, [4 * L * r['cfg'].n_embd * r['cfg'].n_layer / r['F'] for r in paper], ls, color='gray', lw=1,
                  label=f'4 L d n_L / F, L = {L}')
    ax_a.set_xscale('log')
    ax_a.set_yscale('log')
    ax_a.set_xlabel('non-embedding parameters N (the paper\'s sizes, V = 32001)')
    ax_a.set_ylabel('attention-score FLOPs / F')
    ax_a.set_title('What F leaves out: the attention scores', fontsize=10)
    for group, marker, label in ((False, 's', 'CPU sizes (V = 257, L = 256)'), (True, 'o', 'paper sizes (V = 32001)')):
        sel = [r for r in rows if r['paper'] == group]
        ax_b.plot([r['N'] for r in sel], [r['F'] / (2 * r['N']) for r in sel], marker, label=label)
        for r in (r for r in sel if r['name'] in SHOWN):
            ax_b.annotate(r['name'], (r['N'], r['F'] / (2 * r['N'])), fontsize=6, xytext=(3, -9),
                          textcoords='offset points')
    ax_b.axhline(1, color='k', ls=':', lw=1, label='F = 2N: C = 3 F D is exactly 6 N D')
    ax_b.set_xscale('log')
    ax_b.set_ylim(0, 1.15)
    ax_b.set_xlabel('non-embedding parameters N')
    ax_b.set_ylabel('F / 2N')
    ax_b.set_title('How good is 6ND? F / 2N by size', fontsize=10)
    for ax in (ax_a, ax_b):
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
    lu.savefig(fig, args, '07_flops.png')


# -----------------------------------------------------------------------------
# 2) budget -> steps, checked on real train.py runs

def check_budgets(results):
    """Every train.py results.json: the steps it ran against C / (3 F B L), and its FLOPs against 3 F D and 6 N D."""
    print(f"{'run':>18} {'budget C':>9} {'F':>8} {'B L':>5} {'steps':>6} {'C/(3FBL)':>9} {'3 F D':>9} "
          f"{'6 N D':>9} {'D/N':>6}")
    mismatches = 0
    for r in results:
        cfg = get_config(r['size'], 257 if r['tokenizer'] == 'byte' else 50258, r['seq_len'])
        tokens_per_step = r['batch_size'] * r['seq_len']
        planned = flops.steps_for_budget(r['args']['flops'], cfg, tokens_per_step)
        print(f"{r['family'] + '_' + r['size']:>18} {r['args']['flops']:>9.3g} {r['flops_per_token']:>8.4g} "
              f"{tokens_per_step:>5} {r['steps']:>6} {planned:>9} {3 * r['flops_per_token'] * r['tokens']:>9.3g} "
              f"{6 * r['non_embedding_params'] * r['tokens']:>9.3g} {r['tokens'] / r['non_embedding_params']:>6.2g}")
        mismatches += r['steps'] != planned
    print(f"steps = C / (3 F B L) in {len(results) - mismatches} of {len(results)} runs")


def one_budget(tmp):
    """One tiny train.py run with a FLOP budget (the quick mode's stand-in for a sweep) -> its results.json."""
    out = os.path.join(tmp, 'budget')
    cmd = [sys.executable, os.path.join(lu.ROOT, 'train.py'), '--size', 'zepto', '--seq-len', '32', '--batch-size',
           '4', '--flops', '3e8', '--eval-sequences', '8', '--eval-every', '1000', '--log-every', '1000',
           '--out-dir', out]
    print('$ ' + ' '.join(['python', 'train.py'] + cmd[2:]))
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if done.returncode:
        lu.fail(f"train.py stopped with exit code {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, 'results.json')) as f:
        return json.load(f)


# -----------------------------------------------------------------------------
# 3) the iso-FLOP method: on a known surface, then on real runs

def chinchilla_loss(N, D):
    c = CHINCHILLA
    return c['E'] + c['A'] / N ** c['alpha'] + c['B'] / D ** c['beta']


def chinchilla_optimum(C):
    """The exact minimiser of chinchilla_loss(N, C / 6N) over N: N* = G (C/6)^(beta / (alpha + beta))."""
    c = CHINCHILLA
    G = (c['alpha'] * c['A'] / (c['beta'] * c['B'])) ** (1 / (c['alpha'] + c['beta']))
    return G * (C / 6) ** (c['beta'] / (c['alpha'] + c['beta']))


def synthetic_rows(seed):
    """A sweep on the Chinchilla surface: a fixed ladder of sizes, each budget training the sizes that see 5 to 1000
    tokens per parameter (sweep.py's window), one loss per run with a little noise (0.003 nats, like one seed)."""
    g = np.random.default_rng(seed)
    rows = []
    for C in (1e18, 1e19, 1e20, 1e21):
        for N in 10 ** np.arange(7.0, 10.61, 0.2):
            D = C / (6 * N)
            if 5 <= D / N <= 1000:
                rows.append(dict(family='synthetic', budget=C, params=N, tokens=D,
                                 loss=chinchilla_loss(N, D) + g.normal(0, 0.003)))
    return rows


def read_sweep(sweep_dir):
    """runs.jsonl of sweep.py -> (rows for scaling.analyse, the completed runs' results.json), as sweep.py builds them."""
    path = os.path.join(sweep_dir, 'runs.jsonl')
    if not os.path.isfile(path):
        lu.fail(f"no runs.jsonl in {sweep_dir}: pass the --out-dir of a `python sweep.py` run")
    with open(path) as f:
        index = [json.loads(line) for line in f if line.strip()]
    done = [i for i in index if i['status'] == 'completed']
    rows = [dict(family=i['family'], budget=i['budget'], params=i['non_embedding_params'], loss=i['val_loss'],
                 tokens=i['tokens']) for i in done]
    results = []
    for i in done:  # sweep.py keeps each run in <out-dir>/runs/<name>
        with open(os.path.join(sweep_dir, 'runs', i['name'], 'results.json')) as f:
            results.append(json.load(f))
    print(f"{sweep_dir}: {len(done)} of {len(index)} runs completed")
    return rows, results


def run_sweep(sweep_dir):
    """`python sweep.py --preset quick --out-dir sweep_dir`: 12 train.py runs (finished ones are skipped)."""
    cmd = [sys.executable, os.path.join(lu.ROOT, 'sweep.py'), '--preset', 'quick', '--out-dir', sweep_dir]
    print('$ ' + ' '.join(['python', 'sweep.py'] + cmd[2:]), flush=True)
    code = subprocess.run(cmd, env=ENV).returncode
    if code not in (0, 1):  # 1: some runs failed, the others are still drawn
        lu.fail(f"sweep.py stopped with exit code {code}")


def print_curves(analysis):
    for (family, budget), c in sorted(analysis['curves'].items()):
        if c['bracketed']:
            print(f"  {family:>9} @ {budget:.3g}: N* = {c['n_opt']:.4g}, L* = {c['loss_opt']:.4f}, "
                  f"D* = {c['d_opt']:.3g} tokens ({c['d_opt'] / c['n_opt']:.3g} per parameter)")
        else:
            print(f"  {family:>9} @ {budget:.3g}: not bracketed: {c['reason']}")


def plot_isoflop(panels, args):
    """One panel per (title, analysis, exact optimum function or None): points, fitted parabolas, X at N*."""
    fig, axes = lu.plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    for ax, (title, analysis, exact) in zip(axes[0], panels):
        budgets = sorted({b for _, b in analysis['curves']})
        for i, budget in enumerate(budgets):
            color = lu.plt.cm.viridis(i / max(1, len(budgets) - 1))
            for (family, b), c in analysis['curves'].items():
                if b != budget:
                    continue
                n, loss = zip(*c['points'])
                ax.plot(n, loss, 'o', color=color, ms=4,
                        label=f"C = {budget:.0e}" + ('' if c['bracketed'] else ' (not bracketed)'))
                if c['coeffs'] is not None:
                    x = np.linspace(np.log10(min(n)) - 0.05, np.log10(max(n)) + 0.05, 100)
                    ax.plot(10 ** x, np.polyval(c['coeffs'], x), '-', color=color, lw=1)
                if c['bracketed']:
                    ax.plot(c['n_opt'], c['loss_opt'], 'X', color=color, ms=10, mec='k')
                if exact is not None:
                    ax.axvline(exact(budget), color=color, ls=':', lw=1)
        ax.set_xscale('log')
        if exact is None:  # real runs: one tick per size, in thousands of parameters
            sizes = sorted({n for c in analysis['curves'].values() for n, _ in c['points']})
            ax.set_xticks(sizes, [f"{n / 1e3:.0f}k" for n in sizes], fontsize=8)
            ax.xaxis.set_minor_formatter(lu.plt.NullFormatter())
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('non-embedding parameters N')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel('loss (nats / token)')
    if len(panels) > 1:
        axes[0][1].set_ylabel('validation loss (NELBO for diffusion)')
    lu.savefig(fig, args, '07_isoflop.png')


# -----------------------------------------------------------------------------
# 4) the paper's optima as power laws and compute multipliers

def paper_laws():
    optima, tag = scaling.PAPER['optima']
    budgets = sorted(optima)
    laws = {}
    for f in ('ar', 'mdlm', 'duo', 'eso'):
        laws[f] = dict(n=scaling.fit_power_law(budgets, [optima[b][f][0] for b in budgets]),
                       loss=scaling.fit_power_law(budgets, [optima[b][f][1] for b in budgets]))
    print(f"the paper's iso-FLOP optima {tag}, refit with nanodllm/scaling.py (N* = k C^a, L* = k C^b):")
    multipliers = {}
    for f, law in laws.items():
        line = f"  {LABELS[f]:>15}: a = {law['n']['exponent']:.3f}, b = {law['loss']['exponent']:.4f}"
        if f != 'ar':
            ms = [scaling.multiplier(b, optima[b][f][1], laws['ar']['loss']) for b in budgets]
            multipliers[f] = dict(per_budget=ms, at_1e20=ms[-1], mean=scaling.geometric_mean(ms))
            line += (f" | compute multiplier against AR: {ms[-1]:.1f}x at 1e20, {multipliers[f]['mean']:.1f}x "
                     f"(geometric mean of " + ', '.join(f"{m:.1f}" for m in ms) + ")")
        print(line)
    quoted, tag_s = scaling.PAPER['multiplier']
    print(f"  quoted {tag_s}: MDLM {quoted['mdlm']}x (NELBO-trained {quoted['mdlm-elbo']}x), Duo {quoted['duo']}x, "
          f"Eso-LM {quoted['eso']}x; low-var vs NELBO: 16/14 = {16 / 14:.3f}x -> 1 - 14/16 = {1 - 14 / 16:.1%} less "
          f"compute, the \"~12% more FLOPs-efficient\"")
    return optima, laws, multipliers


def plot_laws(optima, laws, multipliers, args):
    budgets = np.array(sorted(optima))
    grid = np.geomspace(1e18, 1.5e20, 50)
    fig, (ax_n, ax_l, ax_m) = lu.plt.subplots(1, 3, figsize=(14, 4))
    for i, f in enumerate(('ar', 'mdlm', 'duo', 'eso')):
        for ax, key, k in ((ax_n, 'n', 0), (ax_l, 'loss', 1)):
            law = laws[f][key]
            ax.plot(budgets, [optima[b][f][k] for b in budgets], 'o', color=f'C{i}',
                    label=f"{LABELS[f]}: $C^{{{law['exponent']:.3f}}}$")
            ax.plot(grid, scaling.power_law(law, grid), '-', color=f'C{i}', lw=1)
    # the multiplier of MDLM at 1e20, drawn: AR's law reaches MDLM's L* at C_ref, 1e20 / C_ref times less compute
    loss = optima[1e20]['mdlm'][1]
    c_ref = scaling.compute_for_loss(laws['ar']['loss'], loss)
    ax_l.annotate('', xy=(c_ref, loss), xytext=(1e20, loss), arrowprops=dict(arrowstyle='->', color='k', lw=1))
    ax_l.text(np.sqrt(c_ref * 1e20), loss + 0.02, f"AR needs {1e20 / c_ref:.1f}x\nless compute", ha='center',
              fontsize=7)
    for ax, what in ((ax_n, 'N* (non-embedding parameters)'), (ax_l, 'L* (nats / token; NELBO for diffusion)')):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('training FLOPs C')
        ax.set_ylabel(what)
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
    ax_l.yaxis.set_major_formatter(lu.plt.FormatStrFormatter('%.1f'))
    ax_l.yaxis.set_minor_formatter(lu.plt.FormatStrFormatter('%.1f'))
    ax_n.set_title("The paper's optima [F], refit: compute-optimal size", fontsize=10)
    ax_l.set_title('... and the loss there', fontsize=10)
    quoted, _ = scaling.PAPER['multiplier']
    fams = ['mdlm', 'duo', 'eso']
    x = np.arange(len(fams))
    for j, (values, label) in enumerate((([multipliers[f]['at_1e20'] for f in fams], 'refit, at 1e20 [D]'),
                                         ([multipliers[f]['mean'] for f in fams], 'refit, mean of 5 budgets [D]'),
                                         ([quoted[f] for f in fams], 'quoted [S]'))):
        bars = ax_m.bar(x + (j - 1) * 0.27, values, 0.27, label=label, color=['C7', 'C9', 'C1'][j])
        ax_m.bar_label(bars, fmt='%.0f', fontsize=7)
    ax_m.set_xticks(x, [LABELS[f] for f in fams], fontsize=8)
    ax_m.set_ylabel("compute multiplier against AR (C / C_AR at equal loss)")
    ax_m.set_title('How much more compute than AR for the same loss', fontsize=10)
    ax_m.legend(fontsize=7)
    ax_m.grid(alpha=0.3, axis='y')
    lu.savefig(fig, args, '07_laws.png')


# -----------------------------------------------------------------------------
# 5) the memory side: what one GPU holds for one training step of the 1.7B model

def plot_memory(args):
    cfg = get_config('1.7b', 50258, 2048)
    setups = [('DDP, 8 GPUs', dict(nproc=8)),
              ('DDP + activation checkpointing', dict(nproc=8, activation_checkpointing=True)),
              ('FSDP over 8 GPUs', dict(nproc=8, fsdp=True)),
              ('FSDP + activation checkpointing', dict(nproc=8, fsdp=True, activation_checkpointing=True))]
    kinds = ['parameters', 'gradients', 'optimizer', 'working_weights', 'activations', 'logits']
    print(f"memory plan of one training step, 1.7b (V = {cfg.vocab_size}, L = {cfg.seq_len}, bf16 autocast), AR, "
          f"micro-batch 4, GB per GPU:")
    print(f"  {'':32s}" + ''.join(f"{k.replace('_', ' '):>16s}" for k in kinds) + f"{'total':>8s}  largest micro-batch")
    fig, ax = lu.plt.subplots(figsize=(10, 3.6))
    for i, (name, kw) in enumerate(setups):
        plan = memory.plan(cfg, family='ar', micro_batch_size=4, **kw)
        best = memory.max_micro_batch(cfg, 80e9, family='ar', **kw)
        print(f"  {name:32s}" + ''.join(f"{plan[k] / 1e9:16.2f}" for k in kinds) + f"{plan['total'] / 1e9:8.2f}  "
              f"{best} (80 GB)")
        left = 0
        for j, k in enumerate(kinds):
            ax.barh(i, plan[k] / 1e9, left=left, color=f'C{j}', label=k.replace('_', ' ') if i == 0 else None)
            left += plan[k] / 1e9
        ax.text(left + 0.8, i, f"{plan['total'] / 1e9:.1f} GB · largest micro-batch that fits: {best}", va='center',
                fontsize=8)
    ax.axvline(80, color='k', ls='--', lw=1)
    ax.text(80.5, -0.45, 'one 80 GB GPU', fontsize=8, va='top')
    ax.set_yticks(range(len(setups)), [s for s, _ in setups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 125)
    ax.set_xlabel('GB per GPU at the peak of one step (nanodllm/memory.py:plan)')
    ax.set_title('AR 1.7B, L = 2048, micro-batch 4: where the memory goes', fontsize=10)
    ax.legend(fontsize=7, loc='lower right')
    lu.savefig(fig, args, '07_memory.png')


def main(argv=None):
    p = lu.parser(__doc__)
    p.add_argument('--sweep-dir', default=None, help='draw this finished sweep (the --out-dir of `python sweep.py`) '
                   'instead of running `sweep.py --preset quick` into runs/sweep_quick')
    args = p.parse_args(argv)

    print("== 1) counting F: by structure, and with torch's FLOP counter")
    plot_flops(count_sizes(args.quick), args)

    print("\n== 2) a budget becomes steps: steps = C / (3 F B L), the same for every family")
    sweep_dir = args.sweep_dir or os.path.join('runs', 'sweep_quick')
    if args.quick and args.sweep_dir is None:     # no sweep: one train.py budget shows the arithmetic
        with tempfile.TemporaryDirectory() as tmp:
            rows, results = [], [one_budget(tmp)]
    else:
        if args.sweep_dir is None:
            run_sweep(sweep_dir)
        rows, results = read_sweep(sweep_dir)
    check_budgets(results)

    print("\n== 3) the iso-FLOP method: a parabola in log N per budget")
    synthetic = scaling.analyse(synthetic_rows(args.seed))
    law = synthetic['laws']['synthetic']['n']
    c = CHINCHILLA
    print(f"on the Chinchilla surface (exact N* known): fitted N* against exact, exponent {law['exponent']:.3f} "
          f"against the exact beta / (alpha + beta) = {c['beta'] / (c['alpha'] + c['beta']):.3f}")
    for (_, budget), cv in sorted(synthetic['curves'].items()):
        print(f"  C = {budget:.0e}: {len(cv['points'])} sizes, N* = {cv['n_opt']:.3g} (exact "
              f"{chinchilla_optimum(budget):.3g}), L* = {cv['loss_opt']:.4f} (exact "
              f"{chinchilla_loss(chinchilla_optimum(budget), budget / (6 * chinchilla_optimum(budget))):.4f})")
    panels = [('A known surface (Chinchilla fit; dotted: exact N*)', synthetic, chinchilla_optimum)]
    if rows:
        analysis = scaling.analyse(rows)
        print("real runs:")
        print_curves(analysis)
        for family in [f for f in LABELS if any(f == k for k, _ in analysis['curves'])]:
            panels.append((f"{LABELS[family]}: {os.path.basename(os.path.normpath(sweep_dir))}",
                           dict(analysis, curves={k: v for k, v in analysis['curves'].items() if k[0] == family}),
                           None))
        for family, ms in analysis['multipliers'].items():
            if ms:
                print(f"  compute multiplier of {LABELS.get(family, family)} against AR: "
                      + ', '.join(f"{m:.2f}{'*' if x else ''} at {b:.3g}" for b, m, x in ms) + " (*: extrapolated)")
    plot_isoflop(panels, args)

    print("\n== 4) power laws across budgets, compute multipliers")
    plot_laws(*paper_laws(), args)

    print("\n== 5) memory at scale")
    plot_memory(args)


if __name__ == '__main__':
    main()
