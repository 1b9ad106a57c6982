"""The speed-quality Pareto frontier through `sweep.py --pareto` (nanodllm/pareto.py, paper §1.5): which
checkpoints of a finished sweep it samples, the rows cache, bad input, Ctrl-C, and the command end to end.

The sweep is faked: run folders named as sweep.py names them, each with a results.json (status, validation loss,
parameters) and a tiny random checkpoint (samplers and judge need no training to be exercised).

    python -m pytest -q tests/test_pareto.py          # ~20 s on one CPU core
"""
import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import make_model
from nanodllm import launch, pareto, quality
from nanodllm.checkpoint import make_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
OPTIONS = {'ar': {}, 'mdlm': {'loss_type': 'low_var'}, 'duo': {}, 'eso': {'loss_type': 'low_var', 'alpha0': 1.0,
                                                                         'batch_split': 1.0}}
SIZES = {'zepto': 1e5, 'atto': 2e5, 'femto': 4e5, 'pico': 8e5}  # non-embedding parameters of the fake runs
# (family, budget) -> validation loss per size. 1e10: both families bracketed (AR best at atto, MDLM at femto);
# 2e10: AR bracketed (best femto), MDLM still falling at the largest size (not bracketed, best pico)
LOSSES = {('ar', 1e10): [2.2, 2.0, 2.1, 2.3], ('mdlm', 1e10): [2.6, 2.5, 2.45, 2.5],
          ('ar', 2e10): [2.1, 1.95, 1.9, 2.0], ('mdlm', 2e10): [2.5, 2.4, 2.35, 2.3]}


def save(path, family='ar', seq_len=16, seed=0):
    """A tiny random byte-level checkpoint of `family` (V = 257), as train.py would write it."""
    model = make_model(vocab_size=257, n_layer=2, n_head=2, n_embd=32, seq_len=seq_len, seed=seed)
    args = argparse.Namespace(size='nano', data='shakespeare', seq_len=seq_len)
    save_checkpoint(str(path), make_checkpoint(model, model.cfg, args, family, OPTIONS[family], 'byte', step=0,
                                               val_loss=1.0))
    return str(path)


def fake_sweep(out_dir, losses=LOSSES, broken=()):
    """Run folders <out_dir>/runs/<family>_<size>_<budget:g> with results.json and ckpt.pt. `broken`: names of runs
    that diverged with the lowest loss of all (they must never be chosen)."""
    for i, ((family, budget), values) in enumerate(sorted(losses.items())):
        for (size, params), loss in zip(SIZES.items(), values):
            name = f"{family}_{size}_{budget:g}"
            run_dir = out_dir / 'runs' / name
            os.makedirs(run_dir)
            status = 'diverged' if name in broken else 'completed'
            (run_dir / 'results.json').write_text(json.dumps(dict(
                status=status, family=family, size=size, val_loss=0.1 if name in broken else loss,
                non_embedding_params=params)))
            save(run_dir / 'ckpt.pt', family.split('-')[0], seed=i)
    return out_dir


# -----------------------------------------------------------------------------
# which checkpoints

def test_completed_runs_read_from_the_run_folders(tmp_path):
    fake_sweep(tmp_path, broken=['ar_pico_1e+10'])
    os.makedirs(tmp_path / 'runs' / 'mdlm_nano_1e+10')            # started, nothing finished
    (tmp_path / 'runs' / 'mdlm_nano_1e+10' / 'ckpt.pt').write_text('x')
    runs = launch.completed_runs(str(tmp_path))
    assert len(runs) == 15 and 'ar_pico_1e+10' not in {r['name'] for r in runs}
    r = next(r for r in runs if r['name'] == 'mdlm_femto_2e+10')
    assert (r['family'], r['size'], r['budget'], r['params'], r['val_loss']) == ('mdlm', 'femto', 2e10, 4e5, 2.35)
    assert r['ckpt'] == os.path.join(str(tmp_path), 'runs', 'mdlm_femto_2e+10', 'ckpt.pt')
    with pytest.raises(ValueError, match='holds no sweep'):
        launch.completed_runs(str(tmp_path / 'nowhere'))


def chosen_names(runs, **kwargs):
    chosen, notes = pareto.pick_sweep_runs(runs, **kwargs)
    return [r['name'] for r in chosen], notes


def test_the_compute_optimal_run_of_each_family_is_picked(tmp_path):
    """Default: the largest budget that brackets every family's optimum (1e10: at 2e10 MDLM is not bracketed), and
    there each family's lowest loss; a diverged run with a lower loss is never picked."""
    runs = launch.completed_runs(str(fake_sweep(tmp_path, broken=['ar_pico_1e+10'])))
    names, notes = chosen_names(runs)
    assert names == ['ar_atto_1e+10', 'mdlm_femto_1e+10']
    assert 'every family' in notes[0] and 'of the 3 run(s)' in notes[1] and 'of the 4 run(s)' in notes[2]
    names, notes = chosen_names(runs, budget=2e10)
    assert names == ['ar_femto_2e+10', 'mdlm_pico_2e+10']
    assert 'not bracketed' in notes[-1] and 'not bracketed' not in notes[-2]
    names, _ = chosen_names(runs, all_budgets=True)
    assert names == ['ar_atto_1e+10', 'ar_femto_2e+10', 'mdlm_femto_1e+10', 'mdlm_pico_2e+10']
    with pytest.raises(ValueError, match=r'--budget 3e\+10 has no completed run.*1e\+10, 2e\+10'):
        pareto.pick_sweep_runs(runs, budget=3e10)


def test_without_a_fully_bracketed_budget_the_most_bracketed_largest_one_is_used(tmp_path):
    losses = dict(LOSSES)
    losses['mdlm', 1e10] = [2.6, 2.55, 2.5, 2.45]               # now MDLM is bracketed nowhere
    runs = launch.completed_runs(str(fake_sweep(tmp_path, losses)))
    names, notes = chosen_names(runs)
    assert names == ['ar_femto_2e+10', 'mdlm_pico_2e+10'] and 'brackets 1 of 2' in notes[0]
    runs = [r for r in runs if not (r['family'] == 'mdlm' and r['budget'] == 2e10)]  # MDLM has no run at 2e10
    names, notes = chosen_names(runs)
    assert names == ['ar_femto_2e+10'] and any('no completed run at 2e+10' in n for n in notes)


# -----------------------------------------------------------------------------
# the rows cache

@pytest.fixture(scope='module')
def judge_path(tmp_path_factory):
    return save(tmp_path_factory.mktemp('judge') / 'judge.pt', 'ar', seed=9)


def test_rows_already_measured_are_read_back_not_measured_again(tmp_path, judge_path, monkeypatch):
    """Same settings: every row comes from rows.jsonl (evaluate_setting is not called) and equals the first run's;
    a new step count measures only its own rows; a half-written last line (a kill) is skipped; another seed or
    a retrained checkpoint (new file) is measured again."""
    monkeypatch.chdir(tmp_path)  # reference() prepares data/ under the cwd
    ckpts = [('AR', save(tmp_path / 'ar.pt', 'ar')), ('MDLM', save(tmp_path / 'mdlm.pt', 'mdlm', seed=1), {'run': 'm'})]
    judge, cache = quality.load_judge(judge_path), str(tmp_path / 'pareto' / 'rows.jsonl')
    calls = []
    measure = quality.evaluate_setting
    monkeypatch.setattr(pareto, 'evaluate_setting', lambda *a, **k: calls.append(a[1]['family']) or measure(*a, **k))

    def run(steps, seed=0):
        calls.clear()
        return pareto.run_pareto(ckpts, judge, steps, num_samples=3, batch_size=2, seed=seed, cache=cache,
                                 log=lambda *a: None)
    first = run([2, 4])
    assert len(calls) == 3 and len(open(cache).readlines()) == 3
    assert [(r['label'], r['steps'], r.get('run')) for r in first['rows']] == [('AR', None, None), ('MDLM', 2, 'm'),
                                                                              ('MDLM', 4, 'm')]
    again = run([2, 4])
    assert calls == [] and again['rows'] == first['rows'] and again['frontier'] == first['frontier']
    with open(cache, 'a') as f:
        f.write('{"key": {"ckpt": "half a li')
    more = run([2, 4, 8])
    assert len(calls) == 1 and more['rows'][:3] == first['rows'] and more['rows'][3]['steps'] == 8
    assert run([2, 4, 8])['rows'] == more['rows'] and calls == []              # the row after the torn line is read
    run([2], seed=1)
    assert len(calls) == 2
    save(tmp_path / 'mdlm.pt', 'mdlm', seed=5)                                  # retrained: a new file
    os.utime(tmp_path / 'mdlm.pt', ns=(1, 1))
    run([2, 4])
    assert calls == ['mdlm', 'mdlm']                                             # its two rows, not AR's


def test_a_row_appended_after_a_torn_line_starts_its_own_line(tmp_path):
    """append_row writes whole lines; after a line torn by a kill the next row is not glued to it: read_rows skips
    the torn line and reads every whole one, before and after it."""
    path = str(tmp_path / 'pareto' / 'rows.jsonl')
    key = lambda i: json.dumps(dict(ckpt='c', steps=i), sort_keys=True)  # noqa: E731
    pareto.append_row(path, key(1), dict(gen_ppl=1.0))
    pareto.append_row(path, key(2), dict(gen_ppl=2.0))
    with open(path, 'rb+') as f:                     # a kill in the middle of the second line
        f.truncate(os.path.getsize(path) - 9)
    assert pareto.read_rows(path) == {key(1): dict(gen_ppl=1.0)}
    pareto.append_row(path, key(3), dict(gen_ppl=3.0))
    pareto.append_row(path, key(4), dict(gen_ppl=4.0))
    assert pareto.read_rows(path) == {key(1): dict(gen_ppl=1.0), key(3): dict(gen_ppl=3.0), key(4): dict(gen_ppl=4.0)}
    assert open(path, 'rb').read().endswith(b'\n') and len(open(path).readlines()) == 4


def test_default_steps_are_powers_of_two_up_to_the_length():
    assert pareto.default_steps(128) == [8, 16, 32, 64, 128]
    assert pareto.default_steps(100) == [8, 16, 32, 64]
    assert pareto.default_steps(5) == [5]


# -----------------------------------------------------------------------------
# sweep.py --pareto

def sweep(args, cwd, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'sweep.py')] + args, cwd=cwd, capture_output=True,
                          text=True, env=ENV, timeout=timeout)


@pytest.mark.slow
def test_pareto_on_a_finished_sweep_end_to_end_and_resumed(tmp_path, judge_path):
    """JSON + PNG + markdown in <out-dir>/pareto, from the compute-optimal run of each family; the same command again
    measures nothing and writes the same rows; --all-budgets measures only the runs it adds, into files of its own."""
    out = tmp_path / 'runs' / 'sweep_quick'
    fake_sweep(out)
    args = ['--pareto', '--preset', 'quick', '--judge', judge_path, '--steps', '2,4', '--num-samples', '3',
            '--batch-size', '2']
    first = sweep(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    res = json.loads((out / 'pareto' / 'pareto.json').read_text())
    assert [(r['label'], r['run'], r['steps']) for r in res['rows']] == [
        ('AR', 'ar_atto_1e+10', None), ('MDLM (low-var)', 'mdlm_femto_1e+10', 2),
        ('MDLM (low-var)', 'mdlm_femto_1e+10', 4)]
    assert all(r['num_samples'] == 3 and r['batch_size'] == 2 and r['length'] == 16 for r in res['rows'])
    assert len(res['frontier']) == 3 and len(res['notes']) == 3 and 'ar_atto_1e+10' in first.stdout
    assert (out / 'pareto' / 'pareto.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    table = (out / 'pareto' / 'pareto.md').read_text()
    assert 'Real held-out text' in table and 'mdlm_femto_1e+10' in table and table.count('\n| ') == 1 + 3
    assert '3 to measure' in first.stdout

    again = sweep(args, tmp_path)
    assert again.returncode == 0 and '3 read back' in again.stdout and '0 to measure' in again.stdout
    assert json.loads((out / 'pareto' / 'pareto.json').read_text())['rows'] == res['rows']

    every = sweep(args + ['--all-budgets'], tmp_path)
    assert every.returncode == 0, every.stderr[-3000:]
    assert '3 read back' in every.stdout and '3 to measure' in every.stdout
    assert json.loads((out / 'pareto' / 'pareto.json').read_text())['rows'] == res['rows']  # kept: its own files
    res = json.loads((out / 'pareto' / 'pareto_all_budgets.json').read_text())
    assert (out / 'pareto' / 'pareto_all_budgets.png').exists() and (out / 'pareto' / 'pareto_all_budgets.md').exists()
    assert {r['run'] for r in res['rows']} == {'ar_atto_1e+10', 'ar_femto_2e+10', 'mdlm_femto_1e+10',
                                                'mdlm_pico_2e+10'}


@pytest.mark.slow
def test_pareto_on_given_checkpoints_of_every_family(tmp_path, judge_path):
    """--ckpts label=path: every family, Eso-LM crossed with its sampling-time alpha0; results in <out-dir>/pareto."""
    ckpts = ','.join(f"{f}={save(tmp_path / f'{f}.pt', f, seed=i)}" for i, f in enumerate(OPTIONS))
    out = sweep(['--pareto', '--ckpts', ckpts, '--judge', judge_path, '--steps', '2,4', '--alpha0', '1,0.5',
                 '--num-samples', '4', '--batch-size', '2', '--out-dir', 'here'], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / 'here' / 'pareto' / 'pareto.json').read_text())
    assert [r['label'] for r in res['rows']] == ['ar'] + ['mdlm'] * 2 + ['duo'] * 2 + ['eso'] * 4
    assert [(r['steps'], r['alpha0']) for r in res['rows'] if r['label'] == 'eso'] == [(2, 1.0), (4, 1.0), (2, 0.5),
                                                                                        (4, 0.5)]
    assert res['reference']['real_ppl'] > 0 and all(r['tok_s'] > 0 and math.isfinite(r['gen_ppl']) for r in res['rows'])
    assert (tmp_path / 'here' / 'pareto' / 'pareto.png').exists() and (tmp_path / 'here' / 'pareto' / 'pareto.md').exists()


@pytest.mark.parametrize('args,message', [
    (['--pareto'], 'the following arguments are required: --judge'),
    (['--pareto', '--judge', 'J', '--budget', '3e10'], '--budget 3e+10 has no completed run'),
    (['--pareto', '--judge', 'J', '--out-dir', 'empty'], 'no completed run of'),
    (['--pareto', '--judge', 'J', '--out-dir', 'nowhere'], 'holds no sweep'),
    (['--pareto', '--judge', 'J', '--families', 'ar,nope'], "unknown family 'nope'"),
    (['--pareto', '--judge', 'J', '--ckpts', 'a.pt', '--budget', '1e10'], 'drop them, or drop --ckpts'),
    (['--pareto', '--judge', 'J', '--steps', '2,x'], '--steps'),
    (['--pareto', '--judge', 'nope.pt'], 'no judge checkpoint at nope.pt'),
])
def test_bad_input_is_one_line(tmp_path, runner, args, message):
    fake_sweep(tmp_path / 'runs' / 'sweep_cpu', {k: v for k, v in LOSSES.items() if k[1] == 1e10})
    os.makedirs(tmp_path / 'empty' / 'runs')
    out = runner('sweep.py', args, tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], out.stderr


_INTERRUPT_AT = r'''
import runpy, sys
from nanodllm import pareto
measure, calls = pareto.evaluate_setting, [0]
def interrupted(*args, **kwargs):  # Ctrl-C while the 2nd setting is being measured
    calls[0] += 1
    if calls[0] == 2:
        raise KeyboardInterrupt
    return measure(*args, **kwargs)
pareto.evaluate_setting = interrupted
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.mark.slow
def test_ctrl_c_keeps_the_rows_measured_and_a_rerun_measures_the_rest(tmp_path, judge_path):
    out = tmp_path / 'runs' / 'sweep_cpu'
    fake_sweep(out)
    args = ['--pareto', '--judge', judge_path, '--steps', '2,4', '--num-samples', '2']
    cmd = [sys.executable, '-c', _INTERRUPT_AT, os.path.join(ROOT, 'sweep.py')] + args
    stopped = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=300)
    assert stopped.returncode == 130
    assert stopped.stderr.strip().splitlines()[-1].startswith('interrupted: the rows measured so far')
    assert 'Traceback' not in stopped.stderr
    assert len(open(out / 'pareto' / 'rows.jsonl').readlines()) == 1 and not (out / 'pareto' / 'pareto.json').exists()
    rest = sweep(args, tmp_path)
    assert rest.returncode == 0 and '1 read back' in rest.stdout and '2 to measure' in rest.stdout
