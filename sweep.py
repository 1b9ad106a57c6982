"""The paper's iso-FLOP scaling study (spec paper.md §1.2-1.4): train every (family, size, FLOP budget) of a grid
with train.py, fit the compute-optimal size and loss per budget, power laws across budgets and compute multipliers
against AR, and write plots and report.md.

    python sweep.py --preset quick                  # smoke test: 12 tiny runs, ~1 min on 2 CPU cores
    python sweep.py                                 # the CPU study: 5 families x 3 budgets x 4 sizes, ~45 min
    python sweep.py --preset gpu --data corpus/     # GPT-2 BPE, L = 1024, the paper's smaller sizes, one GPU
    python sweep.py --preset paper --data corpus/ --launcher slurm --nproc-per-node 8   # writes a Slurm script
    python sweep.py --preset paper --data corpus/ --collect                             # ... then fit what finished
    python sweep.py --pareto --judge runs/judge/ckpt.pt   # speed-quality frontier of the finished sweep's checkpoints
    python sweep.py --tasks                         # the families on the bundled reasoning tasks (nanodllm/tasksweep.py)

Running the same command again skips finished runs, resumes interrupted ones from their checkpoints, and re-fits;
a run that fails is recorded (runs.jsonl, report.md) and the others go on. Ctrl-C stops every run cleanly.
Reads straight down: presets -> (--pareto, a mode of its own) -> arguments -> grid -> runs -> fits -> plots -> report.
"""
import json
import os
import sys

import torch
from tqdm import tqdm

from nanodllm import cli, data, flops, launch, pareto, quality, scaling
from nanodllm.common import resolve_device
from nanodllm.config import SIZES, get_config

ROOT = os.path.dirname(os.path.abspath(__file__))
TRAIN_PY = os.path.join(ROOT, 'train.py')

# -----------------------------------------------------------------------------
# the families of the study: name -> (label, train.py flags). As in the paper (§1.2): MDLM and Eso-LM train on the
# low-var cross-entropy, Duo on its NELBO, Eso-LM with alpha0 = 1; MDLM on the NELBO is there for the "12%" claim.
FAMILIES = {
    'ar': ('AR', ['--family', 'ar']),
    'mdlm': ('MDLM (low-var)', ['--family', 'mdlm', '--loss', 'low_var']),
    'mdlm-elbo': ('MDLM (NELBO)', ['--family', 'mdlm', '--loss', 'elbo']),
    'duo': ('Duo', ['--family', 'duo']),
    'eso': ('Eso-LM (α0 = 1)', ['--family', 'eso', '--alpha0', '1']),
}
ALL = list(FAMILIES)
LADDER = ['6M', '19M', '34M', '48M', '66M', '85M', '75M', '113M', '142M', '170M', '180M', '206M', '231M', '268M',
          '302M', '336M', '472M', '551M', '571M', '629M', '666M', '761M', '831M', '944M', '1233M', '1476M', '1678M',
          '2121M']  # the paper's sizes (spec §6.1), in order of non-embedding parameters at V = 32001

# Presets. A (size, budget) pair is trained only if it sees between window[0] and window[1] tokens per
# non-embedding parameter (D = C / 3F): far outside, every family is far from its optimum (the paper's optima sit at
# 14-75 tokens/parameter), so the grid follows the optimum up the sizes as the budget grows. `train`: the train.py
# flags of every run; one batch, L and learning rate for all sizes and families, as in the paper.
PRESETS = {
    # smoke test (< 2 min on 2 CPU cores): the three smallest sizes, two families, two budgets of 100-600 steps
    'quick': dict(families=['ar', 'mdlm'], sizes=['zepto', 'atto', 'femto'], budgets=[1e10, 2e10],
                  data='shakespeare', tokenizer='byte', window=(0.1, 1e5),
                  train=['--seq-len', '64', '--batch-size', '8', '--lr', '3e-3', '--eval-sequences', '64',
                         '--eval-every', '1000', '--log-every', '50']),
    # the default, ~45 min on 2 CPU cores: bundled Shakespeare, byte tokens, every family, 4 sizes per budget around
    # the optima of AR and MDLM (measured: AR's near atto at 5e11, pico at 2e12). The budgets buy 1-8M tokens a run,
    # so the batch is small (8 x 128 = 1,024 tokens): every run gets >= 1,100 steps. lr 3e-3: of 1e-3, 3e-3, 1e-2,
    # the best for nano at 5e11 (femto prefers 1e-2, so a single rate slightly favours the larger sizes).
    'cpu': dict(families=ALL, sizes=['zepto', 'atto', 'femto', 'pico', 'nano'],
                budgets=[5e11, 1e12, 2e12], data='shakespeare', tokenizer='byte', window=(3, 150),
                train=['--seq-len', '128', '--batch-size', '8', '--lr', '3e-3', '--eval-sequences', '512',
                       '--eval-every', '1000', '--log-every', '50']),
    # one GPU, a few hours (3.8e18 FLOPs: ~4-7 h on an H100 at 150-250 TFLOP/s, an estimate): GPT-2 BPE, L = 1024,
    # the lower rungs of the paper's ladder and three CPU sizes below them (with GPT-2's 50k-row head, small models
    # are mostly head). Batch 64 x 1024 = 65k tokens, >= 1,400 steps a run; lr 1e-3 (a guess between the paper's
    # 2e-4 at 8x the batch and 3e-3 on CPU, not tuned).
    'gpu': dict(families=ALL, sizes=['nano', 'micro', 'tiny'] + LADDER[:9], budgets=[1e16, 3e16, 1e17], data=None,
                tokenizer='gpt2', window=(3, 300),
                train=['--seq-len', '1024', '--batch-size', '64', '--lr', '1e-3', '--eval-sequences', '512',
                       '--eval-every', '1000', '--log-every', '50', '--compile']),
    # the paper's grid (§1.2, §6.3) for a cluster: budgets 6e18 ... 1e20, its sizes, L = 2048, batch 256 x 2048,
    # lr 2e-4 -> 2e-5 (GPT-2 BPE instead of the paper's Llama-2 tokenizer, which nanodllm does not ship)
    'paper': dict(families=ALL, sizes=LADDER, budgets=[6e18, 1e19, 3e19, 6e19, 1e20], data=None,
                  tokenizer='gpt2', window=(3, 300),
                  train=['--seq-len', '2048', '--batch-size', '256', '--micro-batch-size', '8', '--lr', '2e-4',
                         '--min-lr', '2e-5', '--eval-sequences', '2048', '--eval-every', '10000', '--log-every',
                         '100', '--compile']),
}


# -----------------------------------------------------------------------------
# --pareto: the speed-quality frontier of the sweep's checkpoints (paper §1.5), a mode of its own that trains
# nothing: each family's compute-optimal run (of one budget, or of every budget) is sampled over the sampler
# settings and judged (nanodllm/pareto.py); <out-dir>/pareto/ gets pareto.json, .png and .md (pareto_all_budgets.*
# with --all-budgets) and the rows cache rows.jsonl: the same command again measures only what it has not measured.
if '--pareto' in sys.argv[1:]:
    q = cli.ArgumentParser(description='The speed-quality Pareto frontier of a finished sweep (paper §1.5): gen PPL '
                           'under a judge, entropy and tok/s of each family over sampling steps.')
    q.add_argument('--pareto', action='store_true', required=True)
    q.add_argument('--judge', required=True, help='the judge LM: an AR checkpoint trained on the same data (e.g. '
                   'runs/judge/ckpt.pt), hf:NAME or gguf:FILE.gguf (pip install -e ".[judge]")')
    q.add_argument('--preset', choices=PRESETS, default='cpu', help='the sweep, for the default --out-dir')
    q.add_argument('--out-dir', help='the sweep folder (default: runs/sweep_<preset>); results go to <out-dir>/pareto')
    q.add_argument('--families', help=f"comma-separated subset of the sweep's families: {', '.join(FAMILIES)}")
    q.add_argument('--budget', type=cli.number(gt=0), help="the budget whose compute-optimal runs are sampled; "
                   "none: the largest at which every family's optimum is bracketed")
    q.add_argument('--all-budgets', action='store_true', help="every budget's compute-optimal run, one frontier per "
                   "family over all of them (the paper's figure)")
    q.add_argument('--ckpts', help='label=path,... : these checkpoints instead of the sweep\'s (e.g. the runs of '
                   'benchmarks/compare_families.py)')
    q.add_argument('--steps', type=cli.list_of(cli.integer(min=1)), help='diffusion sampling steps, comma-separated '
                   '(default: 8, 16, 32, ... up to the sample length; AR has none)')
    q.add_argument('--alpha0', type=cli.list_of(cli.number(ge=0, le=1)), default=[1.0, 0.5, 0.25],
                   help="Eso-LM's alpha0 at sampling time, comma-separated")
    q.add_argument('--temperature', type=cli.list_of(cli.number(ge=0)), default=[1.0], help='comma-separated')
    q.add_argument('--top-p', type=cli.list_of(cli.number(gt=0, le=1)), default=[1.0], help='comma-separated')
    q.add_argument('--num-samples', type=cli.integer(min=1), default=32, help='samples per setting')
    q.add_argument('--batch-size', type=cli.integer(min=0), default=0, help='samples per sampler call (0: all); '
                   'the paper: the largest power of two that fits')
    q.add_argument('--length', type=cli.integer(min=0), default=0, help='tokens per sample (0: the training length)')
    q.add_argument('--seed', type=cli.integer(min=0), default=0)
    q.add_argument('--device', type=cli.device, default='auto', help='auto | cpu | cuda | cuda:N | mps')
    a = q.parse_args()
    out_dir = a.out_dir or os.path.join('runs', f'sweep_{a.preset}')
    families = list(dict.fromkeys(a.families.split(','))) if a.families else list(FAMILIES)
    labels = dict({f: label for f, (label, _) in FAMILIES.items()}, eso='Eso-LM')  # rows say the alpha0 sampled with
    if a.ckpts and (a.budget or a.all_budgets or a.families):
        q.fail("--budget, --all-budgets and --families choose among a sweep's runs: drop them, or drop --ckpts")
    if a.budget and a.all_budgets:
        q.fail("pass --budget or --all-budgets, not both")
    if any(f not in FAMILIES for f in families):
        q.fail(f"unknown family {next(f for f in families if f not in FAMILIES)!r}; valid: {', '.join(FAMILIES)}")
    try:
        if a.ckpts:  # label=path,...
            ckpts, notes = pareto.parse_ckpts(a.ckpts), []
        else:  # the sweep's completed runs -> each family's compute-optimal run (of one budget, or of each)
            runs = sorted((r for r in launch.completed_runs(out_dir) if r['family'] in families),
                          key=lambda r: families.index(r['family']))
            if not runs:
                raise ValueError(f"no completed run of {', '.join(families)} in {out_dir}/runs: finish the sweep "
                                 f"first (the same command without --pareto), or pass --ckpts")
            chosen, notes = pareto.pick_sweep_runs(runs, a.budget, a.all_budgets, labels)
            ckpts = [(labels[r['family']], r['ckpt'], dict(run=r['name'], size=r['size'], budget=r['budget'],
                                                           params=r['params'])) for r in chosen]
        sweep_lock = launch.lock(out_dir)  # not while this folder's sweep trains: tok/s would measure its load
        print("checkpoints:\n" + "\n".join(f"  {n}" for n in notes or [f"{c[0]}: {c[1]}" for c in ckpts]))
        device = resolve_device(a.device)
        judge = quality.load_judge(a.judge, device)
        result = pareto.run_pareto(ckpts, judge, a.steps, a.alpha0, a.temperature, a.top_p, a.num_samples,
                                     a.batch_size, a.length, a.seed, device,
                                     cache=os.path.join(out_dir, 'pareto', 'rows.jsonl'), progress=True)
    except ValueError as e:
        q.fail(e)
    except FloatingPointError as e:  # NaN sampling probabilities: a broken checkpoint
        q.fail(e, code=1)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the rows measured so far are in {out_dir}/pareto/rows.jsonl; run the same command "
              f"again to measure the rest", file=sys.stderr)
        sys.exit(130)
    result['notes'] = notes
    paths = pareto.write_pareto(result, os.path.join(out_dir, 'pareto'),
                                  'pareto_all_budgets' if a.all_budgets else 'pareto')
    print(f"wrote {', '.join(paths)}")
    sys.exit(0)

# -----------------------------------------------------------------------------
# --tasks: the family comparison on the bundled reasoning tasks (issue 19), a mode of its own: every family trained
# on each task's records at one FLOP budget, lr chosen on val, 3 seeds, decoded with every order (nanodllm/tasksweep.py)
if '--tasks' in sys.argv[1:]:
    from nanodllm import tasksweep
    sys.exit(tasksweep.main(sys.argv[1:]))

# -----------------------------------------------------------------------------
# arguments
p = cli.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--preset', choices=PRESETS, default='cpu', help='the grid and train.py flags (see PRESETS)')
p.add_argument('--families', help=f"comma-separated, overrides the preset's: {', '.join(FAMILIES)}")
p.add_argument('--sizes', help="comma-separated names from nanodllm/config.py SIZES, overrides the preset's")
p.add_argument('--budgets', type=cli.list_of(cli.number(gt=0)),
               help="comma-separated training FLOPs, e.g. 1e12,3e12, overrides the preset's")
p.add_argument('--data', help="corpus ('shakespeare', a .txt file or a folder of .txt), overrides the preset's")
p.add_argument('--out-dir', help='where runs/, runs.jsonl, the plots and report.md go (default: runs/sweep_<preset>)')
p.add_argument('--jobs', type=cli.integer(min=0), default=0,
               help='runs at once on this machine (0: one per GPU, or one per CPU core with one thread each)')
p.add_argument('--nproc-per-node', type=cli.integer(min=1), default=1, help='processes (GPUs) per run, through torchrun')
p.add_argument('--launcher', choices=('local', 'slurm'), default='local',
               help='local: run here; slurm: write <out-dir>/sweep.sbatch (one array task per run) and stop')
p.add_argument('--collect', action='store_true', help='train nothing: fit, plot and report what has finished '
               '(refused if no run has completed yet)')
p.add_argument('--retry-failed', action='store_true', help='run failed runs again (from their checkpoint if any)')
p.add_argument('--dry-run', action='store_true', help='print the grid and what would run, then stop')
p.add_argument('--pareto', action='store_true', help='sample the finished sweep\'s checkpoints and draw the '
               'speed-quality frontier instead of training (its flags: python sweep.py --pareto --help)')
p.add_argument('--tasks', action='store_true', help='the family comparison on the bundled tasks instead of the '
               'scaling study (its flags: python sweep.py --tasks --help)')
p.add_argument('train_args', nargs='*', help='extra train.py flags for every run, after --, e.g. -- --seed 2')
args = p.parse_args()

preset = PRESETS[args.preset]
families = list(dict.fromkeys(args.families.split(','))) if args.families else preset['families']
sizes = list(dict.fromkeys(args.sizes.split(','))) if args.sizes else preset['sizes']
budgets = sorted(set(args.budgets)) if args.budgets else preset['budgets']
corpus = args.data or preset['data']
out_dir = args.out_dir or os.path.join('runs', f'sweep_{args.preset}')
for name, given, valid in (('family', families, FAMILIES), ('size', sizes, SIZES)):
    if any(g not in valid for g in given):
        p.fail(f"unknown {name} {next(g for g in given if g not in valid)!r}; valid: {', '.join(valid)}")
if corpus is None and not args.collect:
    p.fail(f"--preset {args.preset} needs --data: a .txt file or a folder of .txt files (e.g. a SlimPajama dump)")

# -----------------------------------------------------------------------------
# grid: every (family, size, budget) whose tokens per parameter fall in the preset's window
vocab = data.get_tokenizer(preset['tokenizer']).n_vocab + 1
seq_len = int(preset['train'][preset['train'].index('--seq-len') + 1])
runs, skipped = [], []
for budget in sorted(budgets):
    for size in sizes:
        cfg = get_config(size, vocab, seq_len)
        n, tokens = flops.non_embedding_params(cfg), budget / (3 * flops.forward_flops_per_token(cfg))
        if not preset['window'][0] <= tokens / n <= preset['window'][1]:
            skipped.append(f"{size}@{budget:.3g} ({tokens / n:.3g} tok/param)")
            continue
        for family in families:
            name = f"{family}_{size}_{budget:g}"
            runs.append(dict(name=name, family=family, size=size, budget=budget, params=n, tokens=tokens,
                             dir=os.path.join(out_dir, 'runs', name),
                             args=['--data', corpus or '', '--tokenizer', preset['tokenizer']] + preset['train']
                             + FAMILIES[family][1] + ['--size', size, '--flops', f"{budget:.10g}"] + args.train_args))
if not runs:
    p.fail(f"no (size, budget) pair trains on {preset['window'][0]}-{preset['window'][1]} tokens per parameter: "
            f"pick other --sizes or --budgets (skipped: {', '.join(skipped)})")
try:  # one sweep at a time per out-dir (a dry run only reads)
    sweep_lock = None if args.dry_run else launch.lock(out_dir)
except ValueError as e:
    p.fail(str(e))
state = {r['name']: launch.run_state(r['dir']) for r in runs}  # (state, results, error) from each run's folder
for run in runs:
    conflict = launch.check_args(run)
    if conflict and not args.collect:
        p.fail(f"{conflict}: use another --out-dir, or delete that folder to train it again")
todo = [r for r in runs if state[r['name']][0] in ('new', 'interrupted')
        or (args.retry_failed and state[r['name']][0] == 'failed')]
count = {s: sum(state[r['name']][0] == s for r in runs) for s in ('completed', 'interrupted', 'failed', 'new')}
if args.collect and not count['completed']:  # nothing to fit or plot: no report that links plots it cannot draw
    p.fail(f"--collect: none of the {len(runs)} runs of this grid has completed in {out_dir}/runs ("
           + ", ".join(f"{v} {k}" for k, v in count.items() if v) + "): train them first (the same command without "
           "--collect), then collect")
print(f"sweep {args.preset}: {len(runs)} runs ({len(families)} families x {len(budgets)} budgets; "
      + ", ".join(f"{v} {k}" for k, v in count.items() if v) + f"), {sum(r['budget'] for r in runs):.3g} training "
      f"FLOPs in all -> {out_dir}")
for budget in sorted(budgets):
    print(f"  {budget:.3g} FLOPs: " + ", ".join(f"{r['size']} ({r['params'] / 1e6:.3g}M, "
                                                  f"{r['tokens'] / r['params']:.3g} tok/param)" for r in runs
                                                  if r['budget'] == budget and r['family'] == families[0]))
if skipped:
    print(f"  outside the {preset['window'][0]}-{preset['window'][1]} tokens/param window, not run: "
          + ", ".join(skipped))
for run in runs:  # e.g. exited 0 but its results.json was damaged since: resumed, which rewrites it
    if state[run['name']][0] == 'interrupted' and state[run['name']][2]:
        print(f"  {run['name']}: {state[run['name']][2]}")
if count['failed'] and not args.retry_failed:
    print(f"  {count['failed']} failed run(s) are not run again: pass --retry-failed to retry them")
if args.dry_run:
    sys.exit(0)
if not todo and not args.collect:
    print("nothing to train: every run has finished (or failed)")

# -----------------------------------------------------------------------------
# runs: here through a pool of processes, or on a cluster through a Slurm array
index_path = os.path.join(out_dir, 'runs.jsonl')


def record(run, status=None):
    """The index line of a run: its state from its folder (or `status` while it runs) and its results."""
    st, res, err = launch.run_state(run['dir'])
    res = res or {}
    return dict(name=run['name'], family=run['family'], size=run['size'], budget=run['budget'],
                status=status or st, error=None if status else err, dir=run['dir'], val_loss=res.get('val_loss'),
                non_embedding_params=res.get('non_embedding_params', run['params']), step=res.get('step'),
                steps=res.get('steps'), tokens=res.get('tokens'), train_flops=res.get('train_flops'),
                seconds=res.get('seconds'),
                command=launch.command(run, TRAIN_PY, args.nproc_per_node))


index = {r['name']: record(r) for r in runs}
launch.write_index(index_path, index.values())
interrupted = False
if todo and not args.collect:
    try:  # tokenize the corpus once, here: a bad --data is one line now, and the runs do not race to write it
        meta = data.prepare(corpus, preset['tokenizer'])
    except (ValueError, OSError) as e:
        p.fail(str(e))
    flags = preset['train'] + args.train_args
    n_eval = int(flags[len(flags) - 1 - flags[::-1].index('--eval-sequences') + 1])  # the last one given wins
    if meta['val_tokens'] // seq_len < n_eval:
        p.fail(f"the validation split of {corpus} holds {meta['val_tokens'] // seq_len} sequences of {seq_len} "
                f"tokens but every run evaluates on {n_eval}: use a larger corpus, or add -- --eval-sequences N")
    for run in todo:
        os.makedirs(run['dir'], exist_ok=True)
        with open(os.path.join(run['dir'], launch.ARGS_FILE), 'w') as f:
            json.dump(run['args'], f)
if todo and not args.collect and args.launcher == 'slurm':
    script = os.path.join(out_dir, 'sweep.sbatch')
    with open(script, 'w') as f:
        f.write(launch.slurm_script(todo, TRAIN_PY, args.nproc_per_node, args.jobs, os.getcwd(),
                                    os.path.abspath(os.path.join(out_dir, 'slurm'))))
    os.makedirs(os.path.join(out_dir, 'slurm'), exist_ok=True)
    print(f"wrote {script} ({len(todo)} array tasks). Submit it with `sbatch {script}`; when the tasks are done, "
          f"fit and plot with the same command plus --collect (rerunning it without --collect writes a script "
          f"for the runs still missing).")
elif todo and not args.collect:
    n_gpus = torch.cuda.device_count()
    n_cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    if n_gpus and args.nproc_per_node > n_gpus:
        p.fail(f"--nproc-per-node {args.nproc_per_node} needs that many GPUs; this machine has {n_gpus}")
    jobs = args.jobs or max(1, (n_gpus or n_cores) // args.nproc_per_node)
    envs = launch.slot_envs(jobs, args.nproc_per_node, n_gpus, n_cores, os.environ.get('OMP_NUM_THREADS'))
    print(f"training {len(todo)} runs, {jobs} at a time, each with " + (
        f"{args.nproc_per_node} GPU(s)" if n_gpus else f"{envs[0]['OMP_NUM_THREADS']} CPU thread(s)"))
    # the bar counts FLOPs, so its ETA weighs each run by its budget rather than counting runs as equal
    bar = tqdm(total=sum(r['budget'] for r in todo), unit='FLOP', unit_scale=True, desc='sweep', dynamic_ncols=True,
               bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} FLOPs [{elapsed}<{remaining}{postfix}]')
    done = {'ok': 0, 'failed': 0}

    def started(run):
        index[run['name']] = record(run, status='running')
        launch.write_index(index_path, index.values())

    def finished(run, code):
        index[run['name']] = rec = record(run)
        launch.write_index(index_path, index.values())
        if rec['status'] == 'completed':
            done['ok'] += 1
            bar.update(run['budget'])
        elif rec['status'] == 'failed':
            done['failed'] += 1
            bar.update(run['budget'])
            tqdm.write(f"{run['name']} failed: {rec['error']}")
        bar.set_postfix_str(f"{done['ok']}/{len(todo)} runs done" + (f", {done['failed']} failed"
                                                                        if done['failed'] else ''))
    try:  # a run with a checkpoint (interrupted, or failed and retried) continues from it
        launch.run_pool(todo, [launch.command(r, TRAIN_PY, args.nproc_per_node,
                                              resume=os.path.isfile(os.path.join(r['dir'], 'ckpt.pt')))
                               for r in todo], envs, started, finished)
    except KeyboardInterrupt:
        interrupted = True
    bar.close()

# -----------------------------------------------------------------------------
# fits: a parabola per (family, budget), power laws across budgets, multipliers against AR
index = {r['name']: record(r) for r in runs}
launch.write_index(index_path, index.values())
finished_rows = [dict(family=i['family'], budget=i['budget'], params=i['non_embedding_params'], loss=i['val_loss'],
                      tokens=i['tokens']) for i in index.values() if i['status'] == 'completed']
analysis = scaling.analyse(finished_rows)

# -----------------------------------------------------------------------------
# plots and report
labels = {f: FAMILIES[f][0] for f in FAMILIES}
if finished_rows:
    scaling.plot_isoflop(analysis, os.path.join(out_dir, 'isoflop.png'), labels)
    scaling.plot_optima(analysis, os.path.join(out_dir, 'optima.png'), labels)
failed = [(i['name'], i['error']) for i in index.values() if i['status'] == 'failed']
results = [launch.run_state(i['dir'])[1] for i in index.values() if i['status'] == 'completed']
setup = [('command', ' '.join(['python sweep.py'] + sys.argv[1:])),
         ('data', f"{corpus}, {preset['tokenizer']} tokens, " + ' '.join(preset['train'] + args.train_args)),
         ('runs', f"{len(finished_rows)} of {len(runs)} completed, {len(failed)} failed; "
                  f"{sum(r['seconds'] for r in results) / 60:.1f} min of training in all"),
         ('devices', ', '.join(sorted({f"{r.get('device')} ({r.get('dtype')})" for r in results})) or '-'),
         ('git commit', ', '.join(sorted({str(r.get('git_commit'))[:10] for r in results})) or '-')]
scaling.write_report(os.path.join(out_dir, 'report.md'), analysis, labels, setup, failed,
                     figures=('isoflop.png', 'optima.png') if finished_rows else ())  # only the plots drawn
for (family, budget), c in sorted(analysis['curves'].items()):
    print(f"  {family:>9} @ {budget:.3g}: " + (f"N* = {c['n_opt']:.3g}, L* = {c['loss_opt']:.4f}" if c['bracketed']
                                              else f"not bracketed: {c['reason']}"))
print(f"wrote {index_path}, {out_dir}/report.md" + (", isoflop.png, optima.png" if finished_rows else ""))
if interrupted:
    print("interrupted: the runs saved checkpoints; run the same command again to resume them", file=sys.stderr)
    sys.exit(130)
if failed:
    print(f"error: {len(failed)} run(s) failed (errors in runs.jsonl and report.md); fix the cause and rerun with "
          f"--retry-failed", file=sys.stderr)
    sys.exit(1)
