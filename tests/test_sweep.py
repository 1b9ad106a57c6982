"""sweep.py and its run plumbing (nanodllm/launch.py): the state of a run folder, the process pool (slots, failures,
Ctrl-C), the Slurm script, the command line, and `python sweep.py --preset quick` end to end.

    python -m pytest -q tests/test_sweep.py          # ~10 s; the end-to-end tests (slow) launch ~15 train.py runs
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nanodllm import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


# -----------------------------------------------------------------------------
# the state of a run folder

@pytest.mark.parametrize('files,state,error', [
    ({}, 'new', None),
    ({'results.json': {'status': 'completed', 'val_loss': 2.0}}, 'completed', None),
    ({'results.json': {'val_loss': 2.0}}, 'completed', None),  # train.py before 'status': results only at the end
    ({'results.json': {'status': 'diverged', 'error': 'the run diverged at step 7'}, 'ckpt.pt': 'x',
      'exit_code': '3'}, 'failed', 'the run diverged at step 7'),
    ({'results.json': {'status': 'interrupted'}, 'ckpt.pt': 'x', 'exit_code': '130'}, 'interrupted', None),
    ({'results.json': {'status': 'interrupted'}, 'ckpt.pt': 'x', 'exit_code': '1'}, 'interrupted', None),  # torchrun
    ({'ckpt.pt': 'x'}, 'interrupted', None),                                   # killed hard: resume
    ({'exit_code': '130', 'stderr.txt': 'interrupted (SIGTERM): stopped during set-up'}, 'new', None),
    ({'exit_code': '2', 'stderr.txt': 'step 1\rstep 2\nerror: --flops 10 buys less than one step\n'}, 'failed',
     'exit code 2: error: --flops 10 buys less than one step'),
    ({'exit_code': '1', 'ckpt.pt': 'x', 'stderr.txt': 'Traceback (most recent call last):\n  File "x"\n'
      'RuntimeError: CUDA out of memory\n'}, 'failed', 'exit code 1: RuntimeError: CUDA out of memory'),
    ({'exit_code': '1', 'stderr.txt': 'error: the one line\nChildFailedError:\n  train.py FAILED\n=========\n'},
     'failed', 'exit code 1: error: the one line'),                          # torchrun's summary comes after
    # exited 0, then results.json was damaged: resumed (train.py rewrites it from ckpt.pt), never failed unexplained
    ({'results.json': '{\n  "status": "completed",\n  "ste', 'ckpt.pt': 'x', 'exit_code': '0'}, 'interrupted',
     'exited 0 but its results.json is missing or damaged: resumed, train.py rewrites it from ckpt.pt'),
    ({'results.json': '[1, 2]', 'ckpt.pt': 'x', 'exit_code': '0'}, 'interrupted',
     'exited 0 but its results.json is missing or damaged: resumed, train.py rewrites it from ckpt.pt'),
    ({'exit_code': '0'}, 'failed', 'exited 0 but left neither a readable results.json nor a ckpt.pt: --retry-failed '
     'trains it again'),
])
def test_run_state_from_the_files_in_the_folder(tmp_path, files, state, error):
    for name, content in files.items():
        write(str(tmp_path / name), json.dumps(content) if isinstance(content, dict) else content)
    got, results, err = launch.run_state(str(tmp_path))
    assert (got, err) == (state, error)


def test_a_run_folder_started_with_other_flags_is_a_conflict(tmp_path):
    run = dict(name='r', dir=str(tmp_path), args=['--lr', '1e-3'])
    assert launch.check_args(run) is None  # nothing recorded yet
    write(str(tmp_path / launch.ARGS_FILE), json.dumps(['--lr', '1e-3']))
    assert launch.check_args(run) is None
    assert '3e-3' in launch.check_args(dict(run, args=['--lr', '3e-3']))
    assert launch.check_args(dict(run, args=['--lr', '1e-3', '--micro-batch-size', '4', '--compile'])) is None


def test_command_line_of_one_and_several_processes():
    run = dict(dir='out/r', args=['--size', 'nano'])
    assert launch.command(run, 'train.py') == [sys.executable, 'train.py', '--size', 'nano', '--out-dir', 'out/r']
    cmd = launch.command(run, 'train.py', nproc=4, resume=True)
    assert cmd[1:5] == ['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node=4']
    assert cmd[-1] == '--resume'


def test_slots_split_gpus_round_robin_or_cpu_threads():
    assert launch.slot_envs(2, 2, 4, 16) == [{'CUDA_VISIBLE_DEVICES': '0,1'}, {'CUDA_VISIBLE_DEVICES': '2,3'}]
    assert [e['CUDA_VISIBLE_DEVICES'] for e in launch.slot_envs(3, 1, 2, 16)] == ['0', '1', '0']  # GPUs shared
    assert launch.slot_envs(2, 1, 0, 8) == [{'OMP_NUM_THREADS': '4'}] * 2
    assert launch.slot_envs(4, 1, 0, 2) == [{'OMP_NUM_THREADS': '1'}] * 4
    assert launch.slot_envs(1, 1, 0, 8, threads='1') == [{'OMP_NUM_THREADS': '1'}]  # the user's OMP_NUM_THREADS


# -----------------------------------------------------------------------------
# the process pool, with a stand-in for train.py

FAKE = textwrap.dedent('''
    """Stand-in for train.py: logs start/end times and its slot's environment; exits with argv[1]; on SIGTERM
    writes results.json 'interrupted' and exits 130 (train.py's contract)."""
    import json, os, signal, sys, time
    out, code, seconds = sys.argv[3], int(sys.argv[1]), float(sys.argv[2])
    def stop(*_):
        json.dump(dict(status='interrupted'), open(os.path.join(out, 'results.json'), 'w'))
        open(os.path.join(out, 'terms'), 'a').write('TERM\\n')
        sys.exit(130)
    signal.signal(signal.SIGTERM, stop)
    t0 = time.time()
    time.sleep(seconds)
    json.dump(dict(start=t0, end=time.time(), omp=os.environ.get('OMP_NUM_THREADS'),
                   tqdm=os.environ.get('TQDM_DISABLE')), open(os.path.join(out, 'times.json'), 'w'))
    if code:
        print('error: fake failure ' + str(code), file=sys.stderr)
        sys.exit(code)
    json.dump(dict(status='completed'), open(os.path.join(out, 'results.json'), 'w'))
''')


def fake_runs(tmp_path, codes, seconds=0.5):
    script = tmp_path / 'fake.py'
    script.write_text(FAKE)
    runs = [dict(name=f'r{i}', dir=str(tmp_path / f'r{i}'), args=[]) for i in range(len(codes))]
    for run in runs:
        os.makedirs(run['dir'])
    return runs, [[sys.executable, str(script), str(c), str(seconds), r['dir']] for r, c in zip(runs, codes)]


def test_pool_runs_at_most_jobs_at_once_and_records_failures(tmp_path):
    runs, cmds = fake_runs(tmp_path, [0, 0, 2, 0, 0])
    envs = [{'OMP_NUM_THREADS': '1'}, {'OMP_NUM_THREADS': '7'}]
    started, finished = [], []
    launch.run_pool(runs, cmds, envs, lambda r: started.append(r['name']), lambda r, c: finished.append((r['name'], c)))
    assert started == ['r0', 'r1', 'r2', 'r3', 'r4']
    assert sorted(finished) == [('r0', 0), ('r1', 0), ('r2', 2), ('r3', 0), ('r4', 0)]
    times = [json.load(open(os.path.join(r['dir'], 'times.json'))) for r in runs]
    for t in times:  # never more than 2 running at any start time
        assert sum(u['start'] <= t['start'] < u['end'] for u in times) <= 2
    assert {t['omp'] for t in times} == {'1', '7'} and {t['tqdm'] for t in times} == {'1'}
    assert [launch.run_state(r['dir'])[0] for r in runs] == ['completed'] * 2 + ['failed'] + ['completed'] * 2
    assert launch.run_state(runs[2]['dir'])[2] == 'exit code 2: error: fake failure 2'


def test_ctrl_c_stops_each_running_run_once_and_starts_no_more(tmp_path):
    """A KeyboardInterrupt while runs are going (here raised when the 2nd run starts): each running run gets one
    SIGTERM, its exit code (130) is recorded, the remaining runs never start, and the interrupt goes on."""
    runs, cmds = fake_runs(tmp_path, [0] * 4, seconds=60)
    started, finished = [], []

    def on_start(run):
        started.append(run['name'])
        if len(started) == 2:
            time.sleep(1)  # let both fakes install their SIGTERM handler
            raise KeyboardInterrupt

    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        launch.run_pool(runs, cmds, [{}, {}], on_start, lambda r, c: finished.append((r['name'], c)))
    assert time.time() - t0 < 30
    assert started == ['r0', 'r1'] and sorted(finished) == [('r0', 130), ('r1', 130)]
    for run in runs[:2]:
        assert open(os.path.join(run['dir'], 'terms')).read() == 'TERM\n'  # exactly one signal
        assert launch.run_state(run['dir'])[0] == 'new'  # interrupted before a checkpoint: starts afresh
    assert not os.listdir(runs[2]['dir']) and not os.listdir(runs[3]['dir'])


# -----------------------------------------------------------------------------
# Slurm

def test_slurm_script_is_valid_bash_and_runs_the_right_command(tmp_path):
    """bash -n accepts it; run as array task 1 with a fake torchrun on PATH, it launches run 1 with --resume (it
    has a checkpoint), sends the output to the run folder and records the exit code."""
    runs = [dict(dir=str(tmp_path / 'runs' / f"ar_nano_{i}"), args=['--size', 'nano', '--data', "it's here"])
            for i in range(3)]
    script = tmp_path / 'sweep.sbatch'
    script.write_text(launch.slurm_script(runs, '/repo/train.py', 8, 2, str(tmp_path), str(tmp_path / 'slurm')))
    assert subprocess.run(['bash', '-n', str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert '#SBATCH --array=0-2%2' in text and '#SBATCH --gpus-per-node=8' in text
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'torchrun').write_text('#!/bin/bash\nfor a in "$@"; do echo "$a"; done\necho oops >&2\nexit 3\n')
    (bin_dir / 'torchrun').chmod(0o755)
    write(os.path.join(runs[1]['dir'], 'ckpt.pt'), 'x')
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID='1')
    out = subprocess.run(['bash', str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 3
    argv = open(os.path.join(runs[1]['dir'], 'stdout.txt')).read().split('\n')
    assert argv[:4] == ['--standalone', '--nproc-per-node=8', '/repo/train.py', '--size']
    assert "it's here" in argv and argv[-4:-1] == ['--out-dir', runs[1]['dir'], '--resume']
    assert open(os.path.join(runs[1]['dir'], 'exit_code')).read().strip() == '3'
    assert launch.run_state(runs[1]['dir'])[2] == 'exit code 3: oops'


# -----------------------------------------------------------------------------
# sweep.py

def sweep(args, cwd, check=True, timeout=600):
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'sweep.py')] + args, cwd=cwd, capture_output=True,
                         text=True, env=ENV, timeout=timeout)
    if check and out.returncode:
        raise AssertionError(f"sweep.py {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")
    return out


@pytest.mark.parametrize('args,message', [
    (['--families', 'ar,nope'], "unknown family 'nope'"),
    (['--budgets', '1e12,x'], '--budgets'),
    (['--preset', 'gpu'], 'needs --data'),
    (['--preset', 'quick', '--budgets', '1e30'], 'tokens per parameter'),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    out = sweep(args + ['--dry-run'], tmp_path, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0]


def test_a_corpus_too_small_to_evaluate_on_is_refused_before_any_run(tmp_path):
    (tmp_path / 'small.txt').write_text('to be or not to be ' * 1000)  # 19k bytes: 15 validation sequences of 64
    out = sweep(['--preset', 'quick', '--data', 'small.txt'], tmp_path, check=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith('error: the validation split')
    assert not (tmp_path / 'runs' / 'sweep_quick' / 'runs').exists()


def test_a_run_folder_with_other_flags_is_refused_not_mixed(tmp_path):
    run_dir = tmp_path / 'runs' / 'sweep_quick' / 'runs' / 'ar_zepto_1e+10'
    write(str(run_dir / launch.ARGS_FILE), json.dumps(['--lr', '1']))
    out = sweep(['--preset', 'quick', '--dry-run'], tmp_path, check=False)
    assert out.returncode == 2 and 'started with other train.py flags' in out.stderr
    assert 'another --out-dir' in out.stderr


def test_one_sweep_at_a_time_per_folder(tmp_path):
    held = launch.lock(str(tmp_path))
    with pytest.raises(ValueError, match='another sweep is using'):
        launch.lock(str(tmp_path))
    held.close()
    launch.lock(str(tmp_path)).close()


def test_dry_run_prints_the_grid_and_trains_nothing(tmp_path):
    out = sweep(['--dry-run'], tmp_path)  # the default preset: cpu
    assert 'sweep cpu:' in out.stdout and 'tok/param' in out.stdout
    assert not os.path.exists(tmp_path / 'runs')


def test_slurm_launcher_writes_a_script_for_the_unfinished_runs(tmp_path):
    out = sweep(['--preset', 'quick', '--launcher', 'slurm', '--nproc-per-node', '2'], tmp_path)
    script = tmp_path / 'runs' / 'sweep_quick' / 'sweep.sbatch'
    assert subprocess.run(['bash', '-n', str(script)]).returncode == 0
    assert '#SBATCH --array=0-11' in script.read_text() and 'sbatch' in out.stdout
    index = [json.loads(line) for line in open(tmp_path / 'runs' / 'sweep_quick' / 'runs.jsonl')]
    assert len(index) == 12 and {r['status'] for r in index} == {'new'}
    report = (tmp_path / 'runs' / 'sweep_quick' / 'report.md').read_text()
    assert '.png' not in report                                           # no plot was drawn, none is linked


def test_collect_with_nothing_finished_is_refused_and_writes_no_report(tmp_path):
    out = sweep(['--preset', 'quick', '--collect'], tmp_path, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: --collect: none of the 12 runs')
    assert 'Traceback' not in out.stderr and not (tmp_path / 'runs' / 'sweep_quick' / 'report.md').exists()


@pytest.mark.slow
def test_quick_preset_end_to_end_resume_and_a_failing_run(tmp_path):
    """python sweep.py --preset quick: every run in its folder, the index, both PNGs and report.md. One run is made to
    fail (a corrupt checkpoint to resume): it is recorded with its error and the others finish. Running the same
    command again trains nothing; --retry-failed trains just that run once its checkpoint is gone."""
    out_dir = tmp_path / 'runs' / 'sweep_quick'
    broken = out_dir / 'runs' / 'mdlm_femto_2e+10'
    write(str(broken / 'ckpt.pt'), 'not a checkpoint')
    first = sweep(['--preset', 'quick'], tmp_path, check=False)
    assert first.returncode == 1, first.stderr[-2000:]
    index = {r['name']: r for r in map(json.loads, open(out_dir / 'runs.jsonl'))}
    assert len(index) == 12
    assert {n for n, r in index.items() if r['status'] != 'completed'} == {broken.name}
    assert index[broken.name]['status'] == 'failed' and 'error' in index[broken.name]['error']
    for name, r in index.items():  # run folders are relative to the sweep's working directory
        assert (tmp_path / r['dir'] / 'stderr.txt').exists() and (tmp_path / r['dir'] / 'exit_code').exists()
        if r['status'] == 'completed':
            assert r['val_loss'] > 0 and (tmp_path / r['dir'] / 'ckpt.pt').exists()
            assert (tmp_path / r['dir'] / 'log.txt').exists() and (tmp_path / r['dir'] / 'results.json').exists()
    for name in ('isoflop.png', 'optima.png', 'report.md'):
        assert (out_dir / name).stat().st_size > 0
    assert broken.name in (out_dir / 'report.md').read_text()
    mtimes = {n: os.path.getmtime(tmp_path / r['dir'] / 'results.json') for n, r in index.items()
              if r['status'] == 'completed'}

    again = sweep(['--preset', 'quick'], tmp_path, check=False)
    assert again.returncode == 1 and 'nothing to train' in again.stdout
    assert mtimes == {n: os.path.getmtime(os.path.join(out_dir / 'runs' / n, 'results.json')) for n in mtimes}

    os.remove(broken / 'ckpt.pt')
    damaged = out_dir / 'runs' / 'ar_zepto_1e+10' / 'results.json'       # a finished run's results.json cut short
    damaged.write_bytes(damaged.read_bytes()[:60])
    retry = sweep(['--preset', 'quick', '--retry-failed'], tmp_path)
    assert 'training 2 runs' in retry.stdout                              # the failed one, and the damaged one resumed
    assert 'ar_zepto_1e+10: exited 0 but its results.json is missing or damaged: resumed' in retry.stdout
    index = [json.loads(line) for line in open(out_dir / 'runs.jsonl')]
    assert {r['status'] for r in index} == {'completed'}
    assert json.loads(damaged.read_text())['status'] == 'completed'       # rewritten from its checkpoint


def processes_in(folder):
    """pids of the processes whose working directory is `folder`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if os.readlink(f'/proc/{pid}/cwd') == str(folder):
                pids.append(pid)
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_cleanly_and_a_rerun_finishes_it(tmp_path):
    """SIGINT while runs are going: exit 130, no run left 'running' in the index, no train.py left behind; the
    same command then finishes the sweep, resuming what had a checkpoint."""
    cmd = [sys.executable, os.path.join(ROOT, 'sweep.py'), '--preset', 'quick', '--budgets', '2e10',
           '--families', 'ar', '--jobs', '1', '--', '--eval-every', '20']
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs_dir, index_path = tmp_path / 'runs' / 'sweep_quick' / 'runs', tmp_path / 'runs' / 'sweep_quick' / 'runs.jsonl'
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs_dir.glob('*/ckpt.pt')):  # a run has written a checkpoint
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    index = [json.loads(line) for line in open(index_path)]
    assert {r['status'] for r in index} <= {'completed', 'interrupted', 'new'}  # none left 'running'
    assert {r['status'] for r in index} != {'completed'}
    assert not processes_in(tmp_path)  # every train.py of the sweep has ended
    sweep(cmd[2:], tmp_path)
    index = [json.loads(line) for line in open(index_path)]
    assert {r['status'] for r in index} == {'completed'}
