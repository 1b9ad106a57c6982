"""The family comparison on the bundled tasks (issue 19; spec sft.md §4), run by `python sweep.py --tasks`: every
family trained from scratch on each task's records at the same FLOP budget, the same learning-rate grid for every
family, the best setting chosen on the validation split, then the other seeds at that setting; every chosen run
decoded on the test split with every order it can run and a few step counts; a table, a plot, a report.

    python sweep.py --tasks --preset quick     # the test suite's end to end run: 1 task (+ fine-tuned), 2 families
    python sweep.py --tasks                    # preset cpu: 3 tasks (+ arith fine-tuned) x 4 families x 3 seeds, 55 min
    python sweep.py --tasks --collect          # train nothing: decode, tabulate and plot what has finished

Reads straight down: data -> grid (phase A: lr grid at the first seed) -> runs -> selection on val accuracy ->
phase B (the other seeds at the chosen setting) -> runs -> test decoding -> table, plot, report. Resumable: every
run is a train.py process in <out-dir>/runs/<name>/ (nanodllm/launch.py: a finished run is not trained again, an
interrupted one resumes, a failed one is recorded and the others go on), and every decoding result is cached in
<out-dir>/evals.jsonl, so the same command again trains and decodes only what is missing.

Fairness (sft.md §4): the same --flops for every family of a task (hence the same steps, batch and rows), the same
lr grid, the same model size; AR, the baseline to beat, also gets a weight-decay grid (dropout is not in the
backbone: weight decay is the regulariser a careful user has here; stronger decay against overfitting few records),
i.e. AR gets twice the tuning of the others, which can only favour it. Selection: the best validation accuracy
(greedy, each family's own left-to-right-free decoder: AR left to right, the others their own sampler at the
largest step count), ties broken by the validation loss.
"""
import json
import math
import os
import statistics
import sys

import torch

from nanodllm import cli, launch, taskeval, tasks
from nanodllm.checkpoint import load_checkpoint
from nanodllm.common import resolve_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, 'train.py')

# the families: name -> (label, train.py flags). MDLM on its NELBO (the SFT recipe of sft.md §2); Eso-LM as in the
# scaling study (alpha0 = 1: its diffusion part); Duo on its NELBO; AR on the response NLL.
FAMILIES = {
    'ar': ('AR', ['--family', 'ar']),
    'mdlm': ('MDLM', ['--family', 'mdlm', '--loss', 'elbo']),
    'duo': ('Duo', ['--family', 'duo']),
    'eso': ('Eso-LM (α0 = 1)', ['--family', 'eso', '--alpha0', '1']),
}

# Presets. tasks: name -> (task parameters, n_train, n_val, n_test, row length L, FLOP budget, decoding steps).
# finetune: task -> pre-training FLOPs: the task is ALSO fine-tuned (as '<task>_ft', the same records, budget, grid
# and seeds) from one pre-training run per family on the bundled corpus (byte level, the same size and L, seed 0),
# as the paper fine-tunes its pre-trained models on GSM8K.
# The budgets and difficulties of 'cpu' were calibrated as README "Tasks" says (so that the families are not all at
# ~0% or ~100%); arith has 100 val/test records, not 200: its rows are 5x longer and MDLM's and Duo's decoding of
# them (no KV cache, up to 112 free positions) was most of the preset's time (the preset must fit an hour on 2 cores).
PRESETS = {
    'quick': dict(tasks={'sudoku': (dict(size=4, blanks=3), 48, 16, 16, 40, 2e9, [4, 24])},
                  finetune={'sudoku': 2e9},
                  families=['ar', 'mdlm'], lrs=[3e-3], ar_weight_decays=[0.1], seeds=[0, 1], size='zepto',
                  train=['--batch-size', '16', '--eval-every', '1000', '--log-every', '50']),
    'cpu': dict(tasks={'sudoku': (dict(size=4, blanks=6), 20000, 200, 200, 40, 1e12, [4, 8, 23]),
                       'countdown': (dict(numbers=3, max_number=10, max_target=100), 10000, 200, 200, 32, 1e12,
                                     [4, 8, 16]),
                       'arith': (dict(steps=2, max_number=10), 20000, 100, 100, 192, 2e12, [16, 64])},
                finetune={'arith': 2e12},
                families=list(FAMILIES), lrs=[1e-3, 3e-3, 1e-2], ar_weight_decays=[0.1, 1.0], seeds=[0, 1, 2],
                size='nano', train=['--batch-size', '32', '--eval-every', '500', '--eval-sequences', '128',
                                    '--log-every', '100']),
    'gpu': dict(tasks={'sudoku': (dict(size=9, blanks=45), 50000, 500, 500, 176, 3e15, [8, 32, 96]),
                       'countdown': (dict(numbers=4, max_number=20, max_target=200), 50000, 500, 500, 48, 1e15,
                                     [8, 16, 32]),
                       'arith': (dict(steps=4, max_number=20), 50000, 500, 500, 320, 3e15, [32, 128])},
                finetune={'arith': 3e15},
                families=list(FAMILIES), lrs=[3e-4, 1e-3, 3e-3], ar_weight_decays=[0.1, 1.0], seeds=[0, 1, 2],
                size='6M', train=['--batch-size', '256', '--eval-every', '1000', '--log-every', '100']),
}


FT = '_ft'  # the suffix of a fine-tuned task's table entries and runs


def run_name(task, family, lr, wd, seed):
    return f"{task}_{family}_lr{lr:g}_wd{wd:g}_s{seed}"


def base_task(task):
    """'arith_ft' -> 'arith': the records and the scorer of a fine-tuned entry are its task's."""
    return task[:-len(FT)] if task.endswith(FT) else task


def table_tasks(preset):
    """The table's entries: every task, then '<task>_ft' for each task that is also fine-tuned."""
    return list(preset['tasks']) + [t + FT for t in preset.get('finetune', {}) if t in preset['tasks']]


def make_pretrain(out_dir, preset, task, family):
    """The pre-training run a fine-tuned entry starts from: the bundled corpus, byte level, the task's L, seed 0."""
    seq_len, budget = preset['tasks'][task][4], preset['finetune'][task]
    name = f"pretrain_{task}_{family}"
    args = (['--data', 'shakespeare', '--tokenizer', 'byte', '--seq-len', str(seq_len), '--size', preset['size'],
             '--flops', f"{budget:.10g}", '--seed', '0'] + preset['train'] + FAMILIES[family][1])
    return dict(name=name, task='pretrain', family=family, lr=1e-3, wd=0.1, seed=0, budget=budget,
                dir=os.path.join(out_dir, 'runs', name), args=args)


def make_run(out_dir, preset, task, family, lr, wd, seed):
    params, n_train, n_val, n_test, seq_len, budget, _ = preset['tasks'][base_task(task)]
    name = run_name(task, family, lr, wd, seed)
    args = (['--data', os.path.join(out_dir, 'data', base_task(task), 'train.jsonl'), '--tokenizer', 'byte',
             '--seq-len', str(seq_len), '--size', preset['size'], '--flops', f"{budget:.10g}", '--lr', f"{lr:g}",
             '--weight-decay', f"{wd:g}", '--seed', str(seed)] + preset['train'] + FAMILIES[family][1])
    if task.endswith(FT):
        args += ['--init-from', os.path.join(make_pretrain(out_dir, preset, base_task(task), family)['dir'],
                                             'ckpt.pt')]
    return dict(name=name, task=task, family=family, lr=lr, wd=wd, seed=seed, budget=budget,
                dir=os.path.join(out_dir, 'runs', name), args=args)


def write_data(out_dir, preset):
    """Each task's splits in <out-dir>/data/<task>/ (written once; a folder with other settings is an error)."""
    for task, (params, n_train, n_val, n_test, *_) in preset['tasks'].items():
        folder = os.path.join(out_dir, 'data', task)
        want = dict(task=task, params=tasks.params_of(task, **params), seed=0,
                    sizes=dict(test=n_test, val=n_val, train=n_train))
        path = os.path.join(folder, 'task.json')
        if os.path.isfile(path):
            with open(path) as f:
                if json.load(f) != want:
                    raise ValueError(f"{folder} holds {task} records of other settings: use another --out-dir")
            continue
        tasks.write_task(folder, task, n_train, n_val, n_test, 0, **params)


def train(runs, out_dir, jobs, retry_failed, index, log=print):
    """Train the runs that are new or interrupted (and failed ones with retry_failed) through launch.run_pool;
    index (name -> record) is updated and written to <out-dir>/runs.jsonl as runs start and end."""
    todo = []
    for run in runs:
        conflict = launch.check_args(run)
        if conflict:
            raise ValueError(f"{conflict}: use another --out-dir, or delete that folder to train it again")
        state = launch.run_state(run['dir'])[0]
        if state in ('new', 'interrupted') or (retry_failed and state == 'failed'):
            todo.append(run)
        index[run['name']] = record(run)
    path = os.path.join(out_dir, 'runs.jsonl')
    launch.write_index(path, index.values())
    if not todo:
        return
    for run in todo:
        os.makedirs(run['dir'], exist_ok=True)
        with open(os.path.join(run['dir'], launch.ARGS_FILE), 'w') as f:
            json.dump(run['args'], f)
    n_gpus = torch.cuda.device_count()
    n_cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    jobs = jobs or max(1, n_gpus or n_cores)
    envs = launch.slot_envs(jobs, 1, n_gpus, n_cores, os.environ.get('OMP_NUM_THREADS'))
    log(f"training {len(todo)} runs, {jobs} at a time")

    def started(run):
        index[run['name']] = record(run, 'running')
        launch.write_index(path, index.values())

    def finished(run, code):
        index[run['name']] = rec = record(run)
        launch.write_index(path, index.values())
        log(f"  {run['name']}: {rec['status']}" + (f" ({rec['error']})" if rec['error'] else ''))
    launch.run_pool(todo, [launch.command(r, TRAIN_PY, resume=os.path.isfile(os.path.join(r['dir'], 'ckpt.pt')))
                           for r in todo], envs, started, finished)


def record(run, status=None):
    st, res, err = launch.run_state(run['dir'])
    res = res or {}
    return dict({k: run[k] for k in ('name', 'task', 'family', 'lr', 'wd', 'seed', 'budget', 'dir')},
                status=status or st, error=None if status else err, val_loss=res.get('val_loss'),
                steps=res.get('steps'), train_flops=res.get('train_flops'), seconds=res.get('seconds'))


class Evals:
    """<out-dir>/evals.jsonl: one line per (run, split, order, steps, block_size) decoded, read back on a rerun."""

    def __init__(self, path):
        self.path, self.rows = path, {}
        if os.path.isfile(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        self.rows[self.key(r['run'], r['split'], (r['order'], r['steps'], r['block_size']))] = r

    @staticmethod
    def key(run, split, setting):
        return json.dumps([run, split, *setting])

    def get(self, run, split, settings, device, task, seed=0):
        """The rows of `settings` for this run and split: cached ones as they are, the rest decoded now."""
        missing = [s for s in settings if self.key(run['name'], split, s) not in self.rows]
        if missing:
            model, ckpt = load_checkpoint(os.path.join(run['dir'], 'ckpt.pt'), device)
            _, records, _ = taskeval.load_task(os.path.dirname(run['args'][1]), split)
            for s, row in zip(missing, taskeval.evaluate(model, ckpt, task, records, missing, seed=seed)):
                row = dict(row, run=run['name'], split=split, task=task, family=run['family'], seed=run['seed'],
                           lr=run['lr'], wd=run['wd'])
                self.rows[self.key(run['name'], split, s)] = row
                with open(self.path, 'a') as f:
                    f.write(json.dumps(row) + '\n')
        return [self.rows[self.key(run['name'], split, s)] for s in settings]


def selection_setting(family, steps):
    """The decoding used to choose a setting on val: AR left to right; the others their own sampler, most steps."""
    return ('l2r', None, None) if family == 'ar' else ('random', max(steps), None)


def mean_spread(values):
    """'mean ± sample std' of a list (± 0 for one value)."""
    m = statistics.mean(values)
    return m, statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv):
    p = cli.ArgumentParser(description='The family comparison on the bundled tasks: equal FLOPs, the same lr grid, '
                           'selection on val, 3 seeds, every decoding order.')
    p.add_argument('--tasks', action='store_true', required=True)
    p.add_argument('--preset', choices=PRESETS, default='cpu')
    p.add_argument('--only', help='comma-separated subset of the preset\'s tasks')
    p.add_argument('--families', help=f"comma-separated subset of the preset's families: {', '.join(FAMILIES)}")
    p.add_argument('--seeds', type=cli.integer(min=1), help="use the preset's first N seeds")
    p.add_argument('--lrs', type=cli.list_of(cli.number(gt=0)), help="comma-separated learning rates, overrides the "
                   "preset's grid (the same for every family)")
    p.add_argument('--out-dir', help='default: runs/tasks_<preset>')
    p.add_argument('--jobs', type=cli.integer(min=0), default=0, help='runs at once (0: one per GPU or CPU core)')
    p.add_argument('--collect', action='store_true', help='train nothing: decode and report what has finished')
    p.add_argument('--retry-failed', action='store_true', help='run failed runs again')
    p.add_argument('--device', type=cli.device, default='cpu', help='where the test decoding runs')
    a = p.parse_args(argv)
    preset = dict(PRESETS[a.preset])
    if a.only:
        unknown = [t for t in a.only.split(',') if t not in preset['tasks']]
        if unknown:
            p.fail(f"unknown task {unknown[0]!r} for --preset {a.preset}; valid: {', '.join(preset['tasks'])}")
        preset['tasks'] = {t: preset['tasks'][t] for t in a.only.split(',')}
    if a.families:
        unknown = [f for f in a.families.split(',') if f not in FAMILIES]
        if unknown:
            p.fail(f"unknown family {unknown[0]!r}; valid: {', '.join(FAMILIES)}")
        preset['families'] = a.families.split(',')
    if a.seeds:
        preset['seeds'] = preset['seeds'][:a.seeds]
    if a.lrs:
        preset['lrs'] = a.lrs
    out_dir = a.out_dir or os.path.join('runs', f'tasks_{a.preset}')
    try:
        lock = launch.lock(out_dir)  # noqa: F841 (held while this process lives)
        device = resolve_device(a.device)
        write_data(out_dir, preset)
        report = run(out_dir, preset, a.jobs, a.retry_failed, a.collect, device, ' '.join(['python sweep.py'] + argv))
    except ValueError as e:
        p.fail(e)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    print(f"wrote {report}")
    failed = [r for r in json.load(open(os.path.join(out_dir, 'table.json')))['runs'] if r['status'] == 'failed']
    if failed:
        print(f"error: {len(failed)} run(s) failed (errors in runs.jsonl and report.md); fix the cause and rerun "
              f"with --retry-failed", file=sys.stderr)
        sys.exit(1)
    return 0


def run(out_dir, preset, jobs, retry_failed, collect, device, command):
    """Phases A and B, test decoding, outputs -> the path of report.md."""
    evals, index = Evals(os.path.join(out_dir, 'evals.jsonl')), {}
    grid = lambda f: [(lr, wd) for lr in preset['lrs'] for wd in (preset['ar_weight_decays'] if f == 'ar'
                                                                   else [0.1])]
    first, rest = preset['seeds'][0], preset['seeds'][1:]
    pretrain = [make_pretrain(out_dir, preset, t, f) for t in preset.get('finetune', {}) if t in preset['tasks']
                for f in preset['families']]
    if not collect:
        train(pretrain, out_dir, jobs, retry_failed, index)
    else:
        index.update({r['name']: record(r) for r in pretrain})
    ready = {(r['name'][len('pretrain_'):]) for r in pretrain if index[r['name']]['status'] == 'completed'}
    phase_a = [make_run(out_dir, preset, t, f, lr, wd, first) for t in table_tasks(preset)
               for f in preset['families'] for lr, wd in grid(f)
               if not t.endswith(FT) or f"{base_task(t)}_{f}" in ready]    # a fine-tune needs its pre-training
    if not collect:
        train(phase_a, out_dir, jobs, retry_failed, index)
    else:
        index.update({r['name']: record(r) for r in phase_a})
    chosen, selection = {}, []  # (task, family) -> (lr, wd)
    for t in table_tasks(preset):
        steps = preset['tasks'][base_task(t)][-1]
        for f in preset['families']:
            done = [r for r in phase_a if r['task'] == t and r['family'] == f
                    and index[r['name']]['status'] == 'completed']
            if not done:
                continue
            setting = selection_setting(f, steps)
            scored = [(evals.get(r, 'val', [setting], device, base_task(t))[0]['accuracy'],
                       -(index[r['name']]['val_loss'] or math.inf), r) for r in done]
            acc, neg_loss, best = max(scored, key=lambda s: (s[0], s[1]))
            chosen[t, f] = (best['lr'], best['wd'])
            selection += [dict(task=t, family=f, lr=r['lr'], wd=r['wd'], val_accuracy=s, val_loss=-nl,
                               chosen=r is best) for s, nl, r in scored]
    phase_b = [make_run(out_dir, preset, t, f, *chosen[t, f], s) for (t, f) in chosen for s in rest]
    if not collect:
        train(phase_b, out_dir, jobs, retry_failed, index)
    else:
        index.update({r['name']: record(r) for r in phase_b})
    # test decoding of every chosen run
    finals = [r for r in phase_a if (r['task'], r['family']) in chosen and (r['lr'], r['wd']) == chosen[
        r['task'], r['family']]] + phase_b
    rows = []
    for r in finals:
        if index[r['name']]['status'] != 'completed':
            continue
        steps = preset['tasks'][base_task(r['task'])][-1]
        rows += [dict(row, task=r['task']) for row in evals.get(r, 'test', taskeval.decode_settings(r['family'], steps),
                                                                device, base_task(r['task']))]
    return write_outputs(out_dir, preset, rows, selection, list(index.values()), command)


def summarise(rows):
    """Test rows -> one line per (task, family, order, steps, block): mean ± std over seeds of accuracy, the seeds'
    values, mean NFE and tok/s."""
    groups = {}
    for r in rows:
        groups.setdefault((r['task'], r['family'], r['order'], r['steps'], r['block_size']), []).append(r)
    out = []
    for (task, family, order, steps, block), g in groups.items():
        g = sorted(g, key=lambda r: r['seed'])
        acc, acc_sd = mean_spread([r['accuracy'] for r in g])
        line = dict(task=task, family=family, order=order, steps=steps, block_size=block, accuracy=acc,
                    accuracy_std=acc_sd, seeds=[r['seed'] for r in g], per_seed=[r['accuracy'] for r in g],
                    nfe=statistics.mean(r['nfe'] for r in g),
                    tokens_per_s=statistics.mean(r['tokens_per_s'] or 0 for r in g))
        if 'cells' in g[0]:
            line['cells'], line['cells_std'] = mean_spread([r['cells'] for r in g])
        out.append(line)
    return out


def write_outputs(out_dir, preset, rows, selection, runs, command):
    summary = summarise(rows)
    with open(os.path.join(out_dir, 'table.json'), 'w') as f:
        json.dump(dict(command=command, preset={k: v for k, v in preset.items()}, summary=summary, raw=rows,
                       selection=selection, runs=runs), f, indent=1, default=str)
    if summary:
        plot(summary, os.path.join(out_dir, 'tasks.png'))
    lines = [f"# Task comparison\n", f"`{command}`\n", f"Every family: the same FLOP budget per task, size "
             f"{preset['size']}, lr grid {preset['lrs']} (AR also weight decay {preset['ar_weight_decays']}), "
             f"chosen on val accuracy; seeds {preset['seeds']}. Accuracy on the test split: mean ± std over seeds "
             f"(each seed's value in brackets); NFE per batch; tok/s = generated positions per second.\n"]
    vl = {}
    for r in runs:
        if r['status'] == 'completed' and r['val_loss'] is not None:
            vl.setdefault((r['task'], r['family']), []).append(r['val_loss'])
    for task in table_tasks(preset):
        params, n_train, n_val, n_test, seq_len, budget, _ = preset['tasks'][base_task(task)]
        how = (f", fine-tuned from a {preset['finetune'][base_task(task)]:.3g}-FLOP pre-training on the bundled "
               f"corpus" if task.endswith(FT) else ", from scratch")
        lines.append(f"\n## {task} {params}: {n_train} train / {n_val} val / {n_test} test records, L = {seq_len}, "
                     f"{budget:.3g} FLOPs a run{how}\n")
        lines.append("| family | order | steps | accuracy | per seed | cells | NFE | tok/s |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for s in [s for s in summary if s['task'] == task]:
            cells = f"{s['cells']:.3f} ± {s['cells_std']:.3f}" if 'cells' in s else '-'
            lines.append(f"| {FAMILIES[s['family']][0]} | {s['order']} | {s['steps'] or '-'} | "
                         f"{s['accuracy']:.3f} ± {s['accuracy_std']:.3f} | "
                         f"{', '.join(f'{v:.3f}' for v in s['per_seed'])} | {cells} | {s['nfe']:.0f} | "
                         f"{s['tokens_per_s']:,.0f} |")
        fams = [f for f in preset['families'] if (task, f) in vl]
        if fams:
            lines.append("\nValidation loss per response token of every completed run of the family (nats; AR: "
                         "exact NLL, the others their NELBO, an upper bound): " + ', '.join(
                             f"{FAMILIES[f][0]} {min(vl[task, f]):.3f}" for f in fams) + " (best run).")
    pre = [r for r in runs if r['task'] == 'pretrain' and r['status'] == 'completed']
    if pre:
        lines.append("\n## Pre-training (the fine-tuned entries start here)\n")
        lines += [f"- {FAMILIES[r['family']][0]}: {r['name']}, {r['steps']} steps, validation loss "
                  f"{r['val_loss']:.3f} nats per byte (AR exact, the others a bound)" for r in pre]
    failed = [r for r in runs if r['status'] == 'failed']
    if failed:
        lines.append("\n## Failed runs\n")
        lines += [f"- {r['name']}: {r['error']}" for r in failed]
    lines.append("\n## Selection (val accuracy, then val loss)\n")
    lines += [f"- {s['task']} {s['family']} lr {s['lr']:g} wd {s['wd']:g}: val accuracy {s['val_accuracy']:.3f}, "
              f"val loss {s['val_loss']:.3f}" + (" **chosen**" if s['chosen'] else '') for s in selection]
    path = os.path.join(out_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


COLORS = {'ar': 'tab:blue', 'mdlm': 'tab:orange', 'duo': 'tab:green', 'eso': 'tab:red'}
STYLES = {'l2r': ('s', ':'), 'random': ('o', '-'), 'confidence': ('^', '--'), 'margin': ('v', '-.')}


def plot(summary, path):
    """Accuracy against tokens/s, one panel per task (two to a row), one curve per (family, order) over the step
    counts: the colour is the family, the marker and line the order; one legend for the figure, below the panels."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    task_names = list(dict.fromkeys(s['task'] for s in summary))
    ncols = min(2, len(task_names))
    nrows = math.ceil(len(task_names) / ncols)
    height, legend_height = 3.8 * nrows + 1.2, 0.8  # inches; the legend sits in the bottom strip
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, height), squeeze=False)
    legend = {}
    for ax, task in zip(axes.flat, task_names):
        curves = {}
        for s in summary:
            if s['task'] == task:
                curves.setdefault((s['family'], s['order']), []).append(s)
        for (family, order), pts in curves.items():
            pts = sorted(pts, key=lambda s: s['tokens_per_s'])
            marker, line = STYLES.get(order, ('o', '-'))
            h = ax.errorbar([s['tokens_per_s'] for s in pts], [s['accuracy'] for s in pts],
                            yerr=[s['accuracy_std'] for s in pts], marker=marker, linestyle=line, capsize=2,
                            color=COLORS.get(family))
            legend.setdefault(f"{FAMILIES[family][0]}, {order}", h)
        ax.set_xscale('log')
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel('tokens/s (generated positions per second)')
        ax.set_ylabel('test accuracy (mean ± std over seeds)')
        ax.set_title(task)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(task_names):]:
        ax.axis('off')
    fig.legend(list(legend.values()), list(legend), loc='lower center', ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
