"""Run plumbing of sweep.py: what state a run folder is in (and which runs of a sweep have completed, for
--pareto), a local pool of train.py processes, Ctrl-C, the runs.jsonl index, and the Slurm array script. sweep.py
decides what to run; this module runs it.

A run is a dict: name, dir (its folder), args (the train.py flags, without --out-dir/--resume) and whatever the
caller adds (family, size, budget). Each run is one `train.py` process (or one torchrun with --nproc-per-node), so
a run is exactly what a user gets by hand, a crash or an out-of-memory kill takes down one run and not the sweep,
every run has fresh global state (threads, RNG, CUDA), and the same command line goes into the Slurm script.

Next to train.py's ckpt.pt, log.txt and results.json, the sweep keeps in each run folder:
- train_args.json  the flags the run was started with: a rerun with other flags is refused, not silently mixed;
- stdout.txt, stderr.txt  the process's output (the progress bar is off: log.txt has every line);
- exit_code  written when the process ends (by the pool, or by the Slurm task).
"""
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time

ARGS_FILE, STDOUT, STDERR, EXIT_FILE = 'train_args.json', 'stdout.txt', 'stderr.txt', 'exit_code'
EXIT_INTERRUPTED = 130


# -----------------------------------------------------------------------------
# the state of one run folder

def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def last_error(run_dir):
    """The run's error: the last `error: ...` line of its stderr, else its last line with a letter in it (a
    traceback ends with the exception; torchrun ends with a '=====' rule)."""
    try:
        with open(os.path.join(run_dir, STDERR), errors='replace') as f:
            lines = [line.strip() for line in f.read().replace('\r', '\n').split('\n')]
    except OSError:
        return 'no stderr.txt'
    lines = [line for line in lines if any(ch.isalpha() for ch in line)]
    errors = [line for line in lines if line.startswith('error:')]
    return (errors or lines or ['(stderr is empty)'])[-1][:500]


def run_state(run_dir):
    """-> (state, results, error). state: 'completed' (results.json says so), 'failed' (diverged, or exited
    with an error: not retried unless asked), 'interrupted' (has a checkpoint to --resume), 'new' (start it).
    A run that exited 0 but whose results.json is missing or damaged is 'interrupted' if it has a checkpoint (its
    --resume rewrites results.json from it: train.py), else 'failed', and `error` says so in both cases."""
    results = _read_json(os.path.join(run_dir, 'results.json'))
    results = results if isinstance(results, dict) else None
    status = results.get('status', 'completed') if results else None  # train.py before status: written at the end
    if status == 'completed':
        return 'completed', results, None
    if status in ('diverged', 'failed'):
        return 'failed', results, results.get('error') or last_error(run_dir)
    code = None
    if os.path.exists(os.path.join(run_dir, EXIT_FILE)):
        with open(os.path.join(run_dir, EXIT_FILE)) as f:
            code = f.read().strip()
    has_ckpt = os.path.isfile(os.path.join(run_dir, 'ckpt.pt'))
    if status is None and code == '0':  # it finished, then results.json was lost or damaged
        if has_ckpt:
            return 'interrupted', results, ("exited 0 but its results.json is missing or damaged: resumed, train.py "
                                            "rewrites it from ckpt.pt")
        return 'failed', results, "exited 0 but left neither a readable results.json nor a ckpt.pt: --retry-failed " \
                                  "trains it again"
    if status != 'interrupted' and code not in (None, '', str(EXIT_INTERRUPTED)):
        return 'failed', results, f"exit code {code}: {last_error(run_dir)}"
    if has_ckpt:
        return 'interrupted', results, None
    return 'new', results, None


def completed_runs(out_dir):
    """The completed runs of the sweep in out_dir, read from its run folders (runs/<family>_<size>_<budget>/, with
    results.json status 'completed' and a ckpt.pt), not from runs.jsonl, which holds only the grid of the sweep's
    last command -> list of dicts: name, family, size, budget, params (non-embedding), val_loss, dir, ckpt.
    ValueError if out_dir holds no sweep."""
    runs_dir = os.path.join(out_dir, 'runs')
    if not os.path.isdir(runs_dir):
        raise ValueError(f"{out_dir} holds no sweep (no runs/ folder): run `python sweep.py` first, pass the sweep's "
                         f"--out-dir, or pass --ckpts")
    out = []
    for name in sorted(os.listdir(runs_dir)):
        run_dir = os.path.join(runs_dir, name)
        parts = name.rsplit('_', 2)  # sweep.py names a run f"{family}_{size}_{budget:g}"
        state, results, _ = run_state(run_dir)
        if (len(parts) != 3 or state != 'completed' or not os.path.isfile(os.path.join(run_dir, 'ckpt.pt'))
                or results.get('val_loss') is None or not results.get('non_embedding_params')):
            continue
        try:
            budget = float(parts[2])
        except ValueError:
            continue
        out.append(dict(name=name, family=parts[0], size=parts[1], budget=budget,
                        params=results.get('non_embedding_params'), val_loss=results.get('val_loss'), dir=run_dir,
                        ckpt=os.path.join(run_dir, 'ckpt.pt')))
    return out


# flags that change how a run is computed, not what it computes (train.py --resume accepts a new micro-batch size)
HOW_NOT_WHAT = {'--micro-batch-size': 1, '--log-every': 1, '--compile': 0}


def _what(args):
    """train.py flags without HOW_NOT_WHAT (each with its value)."""
    out, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
        elif a in HOW_NOT_WHAT:
            skip = HOW_NOT_WHAT[a]
        else:
            out.append(a)
    return out


def check_args(run):
    """A run folder started with other train.py flags must not be resumed or counted: -> None or the conflict.
    Flags in HOW_NOT_WHAT may change (e.g. a smaller --micro-batch-size after running out of memory)."""
    old = _read_json(os.path.join(run['dir'], ARGS_FILE))
    if old is not None and _what(old) != _what(run['args']):
        changed = sorted(set(_what(old)) ^ set(_what(run['args'])))
        return f"{run['dir']} was started with other train.py flags ({' '.join(changed)[:200]})"
    return None


def command(run, train_py, nproc=1, resume=False):
    """The train.py command line of a run: python train.py ... or torchrun --nproc-per-node N train.py ..."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                                                    f'--nproc-per-node={nproc}']
    return launcher + [train_py] + run['args'] + ['--out-dir', run['dir']] + (['--resume'] if resume else [])


# -----------------------------------------------------------------------------
# the sweep's own folder: one sweep at a time, and the index

def lock(out_dir):
    """Hold <out-dir>/.lock for the life of this process; a second sweep on the same folder gets a ValueError."""
    os.makedirs(out_dir, exist_ok=True)
    f = open(os.path.join(out_dir, '.lock'), 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ValueError(f"another sweep is using {out_dir} (it holds {out_dir}/.lock): wait for it, or pass "
                         f"another --out-dir") from None
    return f  # keep a reference: closing it releases the lock


def write_index(path, records):
    """runs.jsonl: one JSON line per run of the grid, rewritten whole (temporary file + rename) at every change,
    so that it is never half-written, even after Ctrl-C or kill -9."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# local runs: a pool of `jobs` processes

def slot_envs(jobs, nproc, n_gpus, n_cores, threads=None):
    """Environment of each pool slot: its GPU(s) through CUDA_VISIBLE_DEVICES (round robin if the slots need more
    GPUs than there are: small models share a GPU well), or its share of the CPU cores through OMP_NUM_THREADS
    (`threads` if given: the user's own OMP_NUM_THREADS wins, e.g. 1 on a machine others are using)."""
    if n_gpus:
        return [dict(CUDA_VISIBLE_DEVICES=','.join(str((s * nproc + i) % n_gpus) for i in range(nproc)))
                for s in range(jobs)]
    return [dict(OMP_NUM_THREADS=str(threads or max(1, n_cores // (jobs * nproc))))] * jobs


def start(run, cmd, env):
    """Start one run in its own session (a Ctrl-C in the terminal reaches the sweep only; the sweep then stops
    each run once, the way train.py expects: one signal = finish the step, checkpoint, exit 130)."""
    if os.path.exists(os.path.join(run['dir'], EXIT_FILE)):  # from an earlier attempt
        os.remove(os.path.join(run['dir'], EXIT_FILE))
    with open(os.path.join(run['dir'], STDOUT), 'ab') as out, open(os.path.join(run['dir'], STDERR), 'wb') as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True,
                                env={**os.environ, 'TQDM_DISABLE': '1', 'PYTHONUNBUFFERED': '1', **env})


def finish(run, code):
    with open(os.path.join(run['dir'], EXIT_FILE), 'w') as f:
        f.write(f"{code}\n")


def run_pool(runs, commands, envs, on_start, on_finish, grace=120):
    """Run `runs` (commands[i] is run i's command line) at most len(envs) at a time, slot k with envs[k].
    on_start(run) / on_finish(run, exit_code) are called as runs start and end. Ctrl-C or SIGTERM: every running
    run gets one SIGTERM and `grace` seconds to checkpoint (a second Ctrl-C stops them at once, as in train.py),
    then the KeyboardInterrupt goes on to the caller."""
    # SIGTERM (e.g. scancel) = Ctrl-C; SIGINT set explicitly too, as train.py does: a sweep started in the background
    # of a non-interactive shell inherits SIGINT ignored, and `kill -INT` must still stop it cleanly
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    todo, free, running = list(zip(runs, commands)), list(range(len(envs))), {}  # running: Popen -> (run, slot)
    try:
        while todo or running:
            while todo and free:
                (run, cmd), slot = todo.pop(0), free.pop(0)
                running[start(run, cmd, envs[slot])] = (run, slot)
                on_start(run)
            time.sleep(0.2)
            for proc, (run, slot) in list(running.items()):
                if proc.poll() is not None:
                    del running[proc]
                    free.append(slot)
                    finish(run, proc.returncode)
                    on_finish(run, proc.returncode)
    except KeyboardInterrupt:
        _stop(running, grace)
        for proc, (run, _) in running.items():
            if proc.returncode >= 0:  # a run we had to kill is not a failed run: it resumes or restarts next time
                finish(run, proc.returncode)
            on_finish(run, proc.returncode)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(running, grace):
    """SIGTERM every run once and wait up to `grace` s; a second Ctrl-C sends the second SIGTERM (stop at once);
    whatever is still alive after that is killed with its whole session."""
    procs = [p for p in running if p.poll() is None]
    if procs:
        print(f"\nstopping {len(procs)} run(s): each saves a checkpoint (Ctrl-C again to stop them at once)",
              file=sys.stderr)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline, again = time.time() + grace, False
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        try:
            time.sleep(0.2)
        except KeyboardInterrupt:
            if not again:
                print("stopping the runs at once", file=sys.stderr)
                for proc in procs:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                deadline, again = min(deadline, time.time() + 10), True
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended in the meantime
                pass
            proc.wait()


# -----------------------------------------------------------------------------
# Slurm: one array task per run

def slurm_script(runs, train_py, nproc, jobs, workdir, log_dir):
    """A bash script for `sbatch`: task i runs run i through torchrun --nproc-per-node (resuming it if it has a
    checkpoint, e.g. after a preemption), with the same output files as a local run. Edit the #SBATCH lines
    (account, partition, time) for your cluster."""
    lines = [
        "#!/bin/bash",
        f"# nanodllm sweep: {len(runs)} runs, one Slurm array task each (written by sweep.py).",
        "# Add your cluster's --account/--partition; --time should cover the longest run (a task that runs out of",
        "# time checkpoints and stops; submitting the script again resumes it).",
        "#SBATCH --job-name=nanodllm-sweep",
        f"#SBATCH --array=0-{len(runs) - 1}" + (f"%{jobs}" if jobs else ""),
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        f"# (clusters without --gpus-per-node: --gres=gpu:{nproc})",
        f"#SBATCH --gpus-per-node={nproc}",
        f"#SBATCH --cpus-per-task={8 * nproc}",
        "#SBATCH --time=24:00:00",
        "#SBATCH --signal=B:TERM@300",
        f"#SBATCH --output={log_dir}/%A_%a.out",
        "",
        "# activate the environment that has nanodllm installed here (e.g. source .venv/bin/activate)",
        f"cd {shlex.quote(workdir)}",
        "export TQDM_DISABLE=1  # no progress bar in the output files: log.txt has every line",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    for i, run in enumerate(runs):
        lines.append(f"  {i}) run={shlex.quote(run['dir'])}; args=({shlex.join(run['args'])}) ;;")
    lines += [
        '  *) echo "no run for task $SLURM_ARRAY_TASK_ID"; exit 2 ;;',
        "esac",
        'resume=""',
        '[ -f "$run/ckpt.pt" ] && resume=--resume',
        'rm -f "$run/exit_code"',
        f'torchrun --standalone --nproc-per-node={nproc} {shlex.quote(train_py)} "${{args[@]}}" --out-dir "$run" '
        f'$resume >> "$run/stdout.txt" 2> "$run/stderr.txt" &',
        'pid=$!',
        "# --signal=B:TERM@300 above: 5 minutes before the time limit, ask the run once to checkpoint and stop",
        "trap 'kill -TERM $pid' TERM",
        'while wait $pid; code=$?; [ $code -gt 128 ] && kill -0 $pid 2>/dev/null; do :; done',
        'echo $code > "$run/exit_code"',
        'exit $code',
        "",
    ]
    return "\n".join(lines)
