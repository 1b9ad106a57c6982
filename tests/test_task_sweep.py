"""sweep.py --tasks (nanodllm/tasksweep.py): the quick preset end to end (data, runs, selection, seeds, test
decoding, table, plot, report), a rerun that trains and decodes nothing, a failed run that is recorded while the
others finish, and bad input in one line."""
import json
import os
import subprocess
import sys

import pytest

from nanodllm import tasksweep
from nanodllm.checkpoint import load_checkpoint
from scripts import ENV, ROOT


def sweep(args, cwd, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'sweep.py'), '--tasks'] + args, cwd=cwd,
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def test_summary_is_mean_and_spread_over_seeds():
    rows = [dict(task='t', family='ar', order='l2r', steps=None, block_size=None, seed=s, accuracy=a, nfe=10,
                 tokens_per_s=100.0) for s, a in ((0, 0.5), (1, 0.7), (2, 0.6))]
    [s] = tasksweep.summarise(rows)
    assert s['per_seed'] == [0.5, 0.7, 0.6] and s['seeds'] == [0, 1, 2]
    assert abs(s['accuracy'] - 0.6) < 1e-12 and abs(s['accuracy_std'] - 0.1) < 1e-12


@pytest.mark.parametrize('args, phrase', [
    (['--only', 'chess'], "unknown task 'chess' for --preset quick"),
    (['--families', 'ar,gpt'], "unknown family 'gpt'"),
])
def test_bad_input_is_one_line(tmp_path, args, phrase):
    out = sweep(['--preset', 'quick'] + args, tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith('error:') and phrase in lines[0], out.stderr


@pytest.mark.slow
def test_quick_preset_end_to_end_a_rerun_trains_nothing_and_a_failed_run_is_recorded(tmp_path):
    out_dir = tmp_path / 'runs' / 'tasks_quick'
    # one run of the second seed is made to fail: a corrupt checkpoint that train.py is asked to resume
    broken = out_dir / 'runs' / tasksweep.run_name('sudoku', 'mdlm', 3e-3, 0.1, 1)
    os.makedirs(broken)
    (broken / 'ckpt.pt').write_text('not a checkpoint')
    first = sweep(['--preset', 'quick', '--jobs', '2'], tmp_path)
    assert first.returncode == 1 and 'failed' in first.stderr, first.stdout[-3000:] + first.stderr[-3000:]
    table = json.loads((out_dir / 'table.json').read_text())
    status = {r['name']: r['status'] for r in table['runs']}
    # 2 pre-training runs, then per entry (sudoku from scratch, sudoku_ft from them) 2 families x 2 seeds
    assert len(status) == 10 and status.pop(broken.name) == 'failed' and set(status.values()) == {'completed'}
    assert broken.name in (out_dir / 'report.md').read_text()
    runs = {r['name']: r for r in table['runs']}
    assert {n for n in runs if n.startswith('pretrain_')} == {'pretrain_sudoku_ar', 'pretrain_sudoku_mdlm'}
    for family in ('ar', 'mdlm'):  # a fine-tune starts from its family's pre-training checkpoint, the other not
        _, ft = load_checkpoint(str(out_dir / 'runs' / tasksweep.run_name('sudoku_ft', family, 3e-3, 0.1, 1) /
                                    'ckpt.pt'), 'cpu')
        scratch = tasksweep.make_run(str(out_dir), tasksweep.PRESETS['quick'], 'sudoku', family, 3e-3, 0.1, 0)
        assert ft['init_from']['path'].endswith(os.path.join(f'pretrain_sudoku_{family}', 'ckpt.pt'))
        assert '--init-from' not in scratch['args']
    # every setting of each family: AR left to right; MDLM random/confidence/margin at 2 step counts + left to right
    for task in ('sudoku', 'sudoku_ft'):
        summary = {(s['family'], s['order'], s['steps']) for s in table['summary'] if s['task'] == task}
        assert summary == {('ar', 'l2r', None), ('mdlm', 'l2r', 1)} | {
            ('mdlm', o, s) for o in ('random', 'confidence', 'margin') for s in (4, 24)}, task
    for s in table['summary']:
        assert 0 <= s['accuracy'] <= 1 and s['nfe'] >= 1 and s['tokens_per_s'] > 0
        broken_seed = s['family'] == 'mdlm' and s['task'] == 'sudoku'
        assert s['seeds'] == ([0] if broken_seed else [0, 1])  # the broken mdlm seed has no test row
    assert {r['seed'] for r in table['raw'] if r['family'] == 'ar'} == {0, 1}
    assert [s['chosen'] for s in table['selection']] == [True] * 4
    assert 'Pre-training' in (out_dir / 'report.md').read_text()
    assert (out_dir / 'tasks.png').stat().st_size > 0
    evals = (out_dir / 'evals.jsonl').read_text()

    again = sweep(['--preset', 'quick', '--jobs', '2'], tmp_path)  # trains nothing, decodes nothing
    assert again.returncode == 1 and 'training' not in again.stdout, again.stdout
    assert (out_dir / 'evals.jsonl').read_text() == evals

    os.remove(broken / 'ckpt.pt')
    retry = sweep(['--preset', 'quick', '--retry-failed'], tmp_path)
    assert retry.returncode == 0 and 'training 1 runs' in retry.stdout, retry.stderr[-3000:]
    table = json.loads((out_dir / 'table.json').read_text())
    assert {r['status'] for r in table['runs']} == {'completed'}
    assert all(s['seeds'] == [0, 1] for s in table['summary']) and len(table['summary']) == 16
