"""Lesson 09, part two: reasoning tasks and the family comparison.

    python tutorials/09b_tasks.py            # tasks, scorers, two nano fine-tunes of 1,000 steps (untimed), orders
    python tutorials/09b_tasks.py --quick    # seconds (the tests)
    python tutorials/09b_tasks.py --table runs/tasks_cpu/table.json   # draw your own finished comparison

Generates the bundled tasks (nanodllm/tasks.py), proves a Sudoku unique with the solver, scores hand-made answers,
fine-tunes AR and MDLM on the same Sudoku records with the conditional losses, and decodes the test puzzles with
every order and step count (nanodllm/taskeval.py) -> 09b_orders.png (accuracy against NFE, one curve per family and
order) and 09b_tasks.png, the committed `sweep.py --tasks` comparison redrawn (accuracy against tokens/s; --table:
another one).
"""
import json
import math
import os

import lesson_utils as lu
import torch

from nanodllm import data, taskeval, tasks, tasksweep
from nanodllm.checkpoint import load_checkpoint
from nanodllm.families import get_family
from nanodllm.config import get_config
from nanodllm.model import Model

NAMES = {'ar': 'AR', 'mdlm': 'MDLM'}
TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks', 'results', 'tasks_cpu',
                     'table.json')  # the committed CPU comparison (README "Reasoning tasks")


def show_tasks(seed):
    """One record of each task, and the scorers on hand-made answers."""
    for name in tasks.GENERATED:
        r = tasks.make_splits(name, 1, 0, 0, seed=seed)['train'][0]
        print(f"[{name}] prompt {r['prompt']!r}\n{' ' * (len(name) + 3)}response {r['response']!r}")
    r = tasks.make_splits('sudoku', 1, 0, 0, seed=seed)['train'][0]
    grid = [int(c) if c != '.' else 0 for c in r['prompt'].strip()]
    erased = list(grid)
    erased[next(i for i, v in enumerate(grid) if v)] = 0
    print(f"solutions of the puzzle (counted up to 2): {len(tasks.solve(grid, 4))}; with one more given erased: "
          f"{len(tasks.solve(erased, 4))} (the generator erases a cell only while the count stays 1)")
    wrong = r['response'][:-1] + ('1' if r['response'][-1] != '1' else '2')
    print(f"sudoku scorer: right {tasks.score('sudoku', r['prompt'], r['response'], r['response'])}, one wrong cell "
          f"{tasks.score('sudoku', r['prompt'], wrong, r['response'])}")
    print(f"GSM8K answers: {tasks.gsm8k_answer('... #### 1,234.50 dollars')!r}, "
          f"{tasks.gsm8k_answer('#### -7')!r}, {tasks.gsm8k_answer('no answer')!r}")


def rows(records, L):
    """Prompt + response + EOS padded with EOS to L, and the given mask (what nanodllm/records.py builds)."""
    tok = data.get_tokenizer('byte')
    x, given = torch.full((len(records), L), tok.eos, dtype=torch.long), torch.zeros(len(records), L, dtype=torch.bool)
    for i, r in enumerate(records):
        p, s = tok.encode(r['prompt']), tok.encode(r['response'])
        x[i, :len(p) + len(s)] = torch.tensor(p + s)
        given[i, :len(p)] = True
    return x, given


def fine_tune(family_name, train, L, steps, seed, size):
    """A small model trained from scratch on the records with the family's conditional loss (lr 3e-3, cosine)."""
    torch.manual_seed(seed)
    model, family = Model(get_config(size, 257, L)), get_family(family_name)
    x, given = rows(train, L)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(seed)
    options = dict(loss_type='elbo') if family_name == 'mdlm' else {}
    for step in range(steps):
        for group in opt.param_groups:
            group['lr'] = 3e-3 * min(1, (step + 1) / 50) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        idx = torch.randint(0, len(x), (32,), generator=g)
        nll, n = family.loss(model, x[idx], given=given[idx], **options)
        opt.zero_grad()
        (nll / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval(), dict(family=family_name, tokenizer='byte', options=options)


def plot_orders(results, args):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for (family, order), pts in results.items():
        pts = sorted(pts, key=lambda r: r['nfe'])
        ax.plot([r['nfe'] for r in pts], [r['accuracy'] for r in pts], marker='o', label=f"{NAMES[family]}, {order}")
    ax.set_xlabel('network calls per batch (NFE)')
    ax.set_ylabel('test accuracy (whole grid right)')
    ax.set_title('4x4 Sudoku (6 blanks): AR and MDLM on the same records, every order')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    lu.savefig(fig, args, '09b_orders.png')


def main(argv=None):
    p = lu.parser(__doc__, ckpt='many')
    p.add_argument('--table', default=TABLE, help='a sweep.py --tasks table.json to redraw as 09b_tasks.png')
    args = p.parse_args(argv)
    show_tasks(args.seed)
    n_train, n_test, size = (64, 16, 'zepto') if args.quick else (20000, 200, 'nano')
    steps = args.train_steps or (30 if args.quick else 1000)
    # the sudoku of sweep.py --tasks --preset cpu: the same test split (test records come first in the stream)
    splits = tasks.make_splits('sudoku', n_train, 0, n_test, size=4, blanks=6)
    L, results, given = 40, {}, {}
    for path in args.ckpt:  # checkpoints trained on these records (e.g. the sweep's runs) replace the training
        model, ckpt = load_checkpoint(path, 'cpu')  # (lu.load would also read its data as text: these are records)
        given[ckpt['family']] = (model, ckpt)
    for family in ('ar', 'mdlm'):
        model, ckpt = given.get(family) or fine_tune(family, splits['train'], L, steps, args.seed, size)
        settings = taskeval.decode_settings(family, [2, 4, 8, 23], orders=('l2r', 'random', 'confidence'))
        for row in taskeval.evaluate(model, ckpt, 'sudoku', splits['test'], settings):
            results.setdefault((family, row['order']), []).append(row)
            print(f"{NAMES[family]:>4} {row['order']:>10} steps {str(row['steps']):>4}: accuracy {row['accuracy']:.3f}"
                  f", cells {row['cells']:.3f}, NFE {row['nfe']}")
    plot_orders(results, args)
    if args.table and not os.path.isfile(args.table):
        lu.fail(f"--table {args.table}: no such file; run python sweep.py --tasks first, or pass its table.json")
    if args.table:
        with open(args.table) as f:
            summary = json.load(f)['summary']
        os.makedirs(args.out_dir, exist_ok=True)
        tasksweep.plot(summary, os.path.join(args.out_dir, '09b_tasks.png'))
        print(f"wrote {os.path.join(args.out_dir, '09b_tasks.png')}")


if __name__ == '__main__':
    main()
