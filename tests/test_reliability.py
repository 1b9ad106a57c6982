"""No lost run, end to end: exact resume after kill -9 for every family, the out-dir lock, no silent overwrite,
divergence, Ctrl-C, a full disk, and validation numbers that do not depend on the micro-batch or process count.

    python -m pytest -q tests/test_reliability.py     # ~1 min on 2 CPU cores (tiny models, a few steps each)

Runs go through the session's `runner` (a fork of a warm Python per run, tests/scripts.py) except where a real
process matters (Ctrl-C, torchrun). Interruptions are deterministic without test hooks in train.py: the runner
patches data.Loader.next_batch to send the process SIGKILL or SIGINT at a given call (train.py prefetches: call
k + 2 happens in step k when there is no accumulation), or torch.save (run by train.py's background checkpoint
writer) to fail with "No space left on device", to crash half-way, or to wait for the training.
"""
import fcntl
import json
import os
import shutil

import pytest
import torch

from scripts import make_corpus, run_script

TINY = ['--size', 'nano', '--seq-len', '32', '--eval-sequences', '8', '--log-every', '1', '--lr', '3e-3',
        '--warmup-steps', '1', '--device', 'cpu', '--batch-size', '4']
FAMILIES = {'ar': ['--family', 'ar'], 'mdlm': ['--family', 'mdlm'], 'duo': ['--family', 'duo'],
            'eso': ['--family', 'eso', '--alpha0', '0.5', '--batch-split', '0.5']}  # eso: both parts draw noise


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp('corpus') / 'text.txt')


@pytest.fixture(scope='module')
def trained(corpus, tmp_path_factory, runner):
    """An out-dir with a finished 2-step MDLM run (ckpt.pt at step 2); tests copy it before touching it."""
    out = tmp_path_factory.mktemp('trained') / 'run'
    done = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '2', '--out-dir', out],
                      out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def copy(trained, tmp_path):
    shutil.copytree(trained, tmp_path / 'run')
    return tmp_path / 'run'


def logged(out_dir):
    """{('loss' | 'val', step): [every value logged for it, in order]} from log.txt."""
    values = {}
    for line in open(os.path.join(out_dir, 'log.txt')):
        if line.startswith('step ') and ('| loss ' in line or '| val ' in line):
            kind = 'loss' if '| loss ' in line else 'val'
            step, value = int(line.split()[1]), float(line.split(f'| {kind} ')[1].split()[0])
            values.setdefault((kind, step), []).append(value)
    return values


def errors(out):
    assert 'Traceback' not in out.stdout + out.stderr, out.stderr[-3000:]
    return [line for line in out.stderr.splitlines() if line.startswith('error:')]


@pytest.mark.slow
@pytest.mark.parametrize('name', list(FAMILIES))
def test_kill_9_then_resume_equals_the_uninterrupted_run(corpus, tmp_path, runner, name):
    """6 steps straight; the same run SIGKILLed in step 5 (checkpoint at step 4; call 7 prefetches step 6's batch),
    then --resume. The final weights are bit-identical and every logged loss (the steps redone after the kill
    included) is equal."""
    common = TINY + ['--data', corpus, '--max-steps', '6', '--eval-every', '2'] + FAMILIES[name]
    straight = runner('train.py', common + ['--out-dir', f'{name}_straight'], tmp_path)
    killed = runner('train.py', common + ['--out-dir', f'{name}_killed'], tmp_path, kill_at=[7])
    resumed = runner('train.py', common + ['--out-dir', f'{name}_killed', '--resume'], tmp_path)
    assert straight.returncode == 0 and resumed.returncode == 0, (straight.stderr[-2000:], resumed.stderr[-2000:])
    assert killed.returncode == -9                                         # really killed, mid-step 5
    a = torch.load(tmp_path / f'{name}_straight' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / f'{name}_killed' / 'ckpt.pt', weights_only=True)
    assert a['step'] == b['step'] == 6
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), (name, k)
    assert a["rng"][0]["cpu"].equal(b["rng"][0]["cpu"])                   # the streams ended in the same state
    want, got = logged(tmp_path / f'{name}_straight'), logged(tmp_path / f'{name}_killed')
    assert set(got) == set(want) and len(want) == 6 + 3, name              # 6 losses, 3 validations
    assert got[("loss", 4)] == want[("loss", 4)] * 2, name                 # step 4 ran twice (before the kill, after)
    for key, values in got.items():
        assert all(v == want[key][0] for v in values), (name, key, values, want[key])
    res = json.loads((tmp_path / f'{name}_killed' / 'results.json').read_text())
    assert res['status'] == 'completed' and res['step'] == 6 and res['resumed_from'] == 4


@pytest.mark.slow
def test_a_second_run_on_a_locked_out_dir_is_refused(corpus, tmp_path, runner):
    out = tmp_path / 'run'
    out.mkdir()
    with open(out / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)                    # a run holds the out-dir
        lock.write('4242\n')
        lock.flush()
        refused = runner('train.py', TINY + ['--data', corpus, '--max-steps', '1', '--out-dir', out], tmp_path)
    assert refused.returncode == 2
    assert len(errors(refused)) == 1 and 'another run (pid 4242) is using --out-dir' in errors(refused)[0]
    assert not (out / 'ckpt.pt').exists() and not (out / 'log.txt').exists()


@pytest.mark.slow
def test_a_rerun_without_resume_is_refused_and_keeps_every_byte(corpus, trained, tmp_path, runner):
    out = copy(trained, tmp_path)
    before = {f: (out / f).read_bytes() for f in ('ckpt.pt', 'log.txt', 'results.json')}
    again = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '2', '--out-dir', out],
                       tmp_path)
    assert again.returncode == 2 and len(errors(again)) == 1
    assert 'pass --resume to continue that run or --overwrite' in errors(again)[0]
    assert {f: (out / f).read_bytes() for f in before} == before
    done = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '2', '--out-dir', out,
                                      '--resume'], tmp_path)                # finished: nothing to do, exit 0
    assert done.returncode == 0 and 'nothing to do' in done.stdout, done.stderr[-2000:]
    assert (out / 'ckpt.pt').read_bytes() == before['ckpt.pt']
    assert (out / 'results.json').read_bytes() == before['results.json']
    fresh = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '1', '--out-dir', out,
                                           '--overwrite'], tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert torch.load(out / 'ckpt.pt', weights_only=True)['step'] == 1
    assert 'step 1 | loss' not in (out / 'log.txt').read_text()           # a new log, not the old one appended


@pytest.mark.slow
def test_a_diverging_run_stops_with_exit_3_and_keeps_the_last_good_checkpoint(corpus, trained, tmp_path, runner):
    out = copy(trained, tmp_path)
    good = (out / 'ckpt.pt').read_bytes()
    boom = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '8', '--eval-every',
                                          '1', '--lr', '1e30', '--out-dir', out, '--resume'], tmp_path)
    assert boom.returncode == 3, boom.stderr[-2000:]
    assert len(errors(boom)) == 1 and 'diverged' in errors(boom)[0] and '--lr (now 1e+30)' in errors(boom)[0]
    assert (out / 'ckpt.pt').read_bytes() == good                          # never overwritten with NaNs
    res = json.loads((out / 'results.json').read_text())
    assert res['status'] == 'diverged' and 3 <= res['step'] < 8 and 'diverged' in res['error']


@pytest.mark.slow
def test_divergence_between_log_steps_is_named_at_its_first_bad_step(corpus, trained, tmp_path, runner):
    """The loss is read only on log steps and before checkpoints, yet the run stops with exit 3 naming the FIRST
    non-finite step and its values, the same as when every step is logged, and the last good checkpoint keeps every
    byte although the weights were updated by the bad steps: found at a later log step (--log-every 4), or only
    before the final checkpoint (--log-every 1000, no evaluation before the end)."""
    good = (trained / 'ckpt.pt').read_bytes()
    common = TINY[:TINY.index('--log-every')] + TINY[TINY.index('--log-every') + 2:] + [
        '--data', corpus, '--family', 'mdlm', '--max-steps', '12', '--eval-every', '100', '--lr', '1e30', '--resume']
    said = {}
    for log_every in (1, 4, 1000):
        out = tmp_path / f'log_every_{log_every}'
        shutil.copytree(trained, out)
        boom = runner('train.py', common + ['--log-every', log_every, '--out-dir', out], tmp_path)
        assert boom.returncode == 3, boom.stderr[-2000:]
        assert len(errors(boom)) == 1 and 'the run diverged at step' in errors(boom)[0]
        said[log_every] = errors(boom)[0]
        assert (out / 'ckpt.pt').read_bytes() == good                     # never overwritten
        res = json.loads((out / 'results.json').read_text())
        assert res['status'] == 'diverged' and res['error'] in said[log_every]
        said[log_every, 'step'] = res['step']
    first = said[1, 'step']
    assert 2 <= first < 12 and first % 4 and said[4, 'step'] == said[1000, 'step'] == first  # not a log step
    assert said[4] == said[1000] == said[1]                                # the same step, loss and gradient norm


@pytest.mark.slow
def test_checkpoints_are_written_in_the_background(corpus, tmp_path, runner):
    """The first checkpoint write (step 4) waits until the training has fetched two more batches: it completes only
    if the training goes on while it writes (the next write, at step 8, waits for it). The run then equals one
    whose writes did not wait."""
    common = TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '8', '--eval-every', '4']
    waited = runner('train.py', common + ['--out-dir', 'waited'], tmp_path, save_waits_at=1)
    plain = runner('train.py', common + ['--out-dir', 'plain'], tmp_path)
    assert waited.returncode == 0 and plain.returncode == 0, waited.stderr[-2000:]
    a = torch.load(tmp_path / 'waited' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'plain' / 'ckpt.pt', weights_only=True)
    assert a['step'] == b['step'] == 8 and all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert logged(tmp_path / 'waited') == logged(tmp_path / 'plain')


@pytest.mark.slow
def test_a_crash_during_a_background_write_keeps_the_previous_checkpoint(corpus, tmp_path, runner):
    """SIGKILL half-way through the second write (step 4): ckpt.pt is still the step-2 checkpoint, the half-written
    temporary is left behind, and --resume removes it and continues exactly (as the uninterrupted run)."""
    common = TINY + ['--data', corpus, '--family', 'duo', '--max-steps', '6', '--eval-every', '2']
    crashed = runner('train.py', common + ['--out-dir', 'run'], tmp_path, crash_in_save_at=2)
    assert crashed.returncode == -9
    assert torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)['step'] == 2
    assert [f for f in os.listdir(tmp_path / 'run') if f.endswith('.tmp')]
    resumed = runner('train.py', common + ['--out-dir', 'run', '--resume'], tmp_path)
    straight = runner('train.py', common + ['--out-dir', 'straight'], tmp_path)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-2000:]
    assert not [f for f in os.listdir(tmp_path / 'run') if f.endswith('.tmp')]
    a = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)['model']
    b = torch.load(tmp_path / 'straight' / 'ckpt.pt', weights_only=True)['model']
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ctrl_c_saves_stops_with_130_and_resumes_exactly(corpus, tmp_path, runner):
    """SIGINT during step 2: the step finishes, a checkpoint at step 3 is written atomically, results.json says
    'interrupted' at step 3, exit 130, one line, no traceback; --resume then equals the uninterrupted run."""
    common = TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '5', '--eval-every', '100']
    stopped = run_script('train.py', common + ['--out-dir', 'run'], tmp_path, kill_at=[4], signal_name='SIGINT')
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert len(errors(stopped)) == 1 and 'interrupted (SIGINT) at step 3' in errors(stopped)[0]
    assert 'SIGINT: finishing this step' in stopped.stderr
    res = json.loads((tmp_path / 'run' / 'results.json').read_text())
    assert res['status'] == 'interrupted' and res['step'] == 3
    assert torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)['step'] == 3
    resumed = runner('train.py', common + ['--out-dir', 'run', '--resume'], tmp_path)
    straight = runner('train.py', common + ['--out-dir', 'straight'], tmp_path)
    assert resumed.returncode == 0 and straight.returncode == 0
    a = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)['model']
    b = torch.load(tmp_path / 'straight' / 'ckpt.pt', weights_only=True)['model']
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize('sig', ['SIGINT', 'SIGTERM'])
def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(corpus, tmp_path, runner, sig):
    common = TINY + ['--data', corpus, '--family', 'duo', '--max-steps', '5', '--eval-every', '1',
                     '--micro-batch-size', '2']                            # 2 batches per step: both signals in step 1
    stopped = runner('train.py', common + ['--out-dir', 'run'], tmp_path, kill_at=[4, 5], signal_name=sig)
    assert stopped.returncode == 130 and 'Traceback' not in stopped.stderr, stopped.stderr[-2000:]
    assert f'{sig}: finishing this step' in stopped.stderr
    assert f'interrupted ({sig}): stopped at once, the last checkpoint is kept' in stopped.stderr
    assert torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)['step'] == 1
    assert json.loads((tmp_path / 'run' / 'results.json').read_text())['status'] == 'interrupted'
    assert not [f for f in os.listdir(tmp_path / 'run') if f.endswith('.tmp')]


@pytest.mark.slow
def test_a_full_disk_at_save_time_keeps_the_previous_checkpoint(corpus, trained, tmp_path, runner):
    out = copy(trained, tmp_path)
    good = (out / 'ckpt.pt').read_bytes()
    full = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '4', '--eval-every', '1',
                                          '--out-dir', out, '--resume'], tmp_path, disk_full_at=1)
    assert full.returncode == 1, full.stderr[-2000:]
    assert len(errors(full)) == 1 and 'could not save' in errors(full)[0] and 'No space left' in errors(full)[0]
    assert 'the previous checkpoint is kept, continue with --resume' in errors(full)[0]
    assert (out / 'ckpt.pt').read_bytes() == good
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')]           # the half-written temporary is gone
    assert json.loads((out / 'results.json').read_text())['status'] == 'failed'


@pytest.mark.slow
def test_a_full_disk_at_the_first_save_says_no_checkpoint_was_written(corpus, tmp_path, runner):
    """The first checkpoint of a new run fails: there is no previous checkpoint to keep or --resume, and the line
    says so (the same command again starts the run afresh)."""
    full = runner('train.py', TINY + ['--data', corpus, '--family', 'ar', '--max-steps', '3', '--eval-every', '1',
                                      '--out-dir', 'run'], tmp_path, disk_full_at=1)
    assert full.returncode == 1, full.stderr[-2000:]
    assert len(errors(full)) == 1 and 'No space left on device: no checkpoint was written' in errors(full)[0]
    assert 'previous checkpoint' not in errors(full)[0] and '--resume' not in errors(full)[0]
    assert not (tmp_path / 'run' / 'ckpt.pt').exists()
    assert not [f for f in os.listdir(tmp_path / 'run') if f.endswith('.tmp')]
    assert json.loads((tmp_path / 'run' / 'results.json').read_text())['status'] == 'failed'


@pytest.mark.slow
@pytest.mark.parametrize('damage', ['truncated', 'missing', 'interrupted'])
def test_resuming_a_finished_run_mends_its_results_json_and_the_sweep_counts_it(corpus, trained, tmp_path, runner,
                                                                                damage):
    """A finished run whose results.json was cut to 60 bytes, deleted, or says 'interrupted' (a second signal after
    the last checkpoint): as the sweep sees it (exit code 0 recorded), it is not completed but resumable, with the
    reason; --resume trains nothing and rewrites results.json from the checkpoint (one warning line); afterwards
    it is valid JSON, status 'completed' at the last step, and the sweep counts the run completed (--pareto too)."""
    from nanodllm import launch
    sweep_dir = tmp_path / 'sweep'
    out = sweep_dir / 'runs' / 'mdlm_nano_1e+10'                          # a sweep's run folder name
    shutil.copytree(trained, out)
    (out / launch.EXIT_FILE).write_text('0\n')
    good = json.loads((out / 'results.json').read_text())
    if damage == 'truncated':
        (out / 'results.json').write_bytes((out / 'results.json').read_bytes()[:60])
    elif damage == 'missing':
        os.remove(out / 'results.json')
    else:
        (out / 'results.json').write_text(json.dumps(dict(good, status='interrupted')))
    state, _, why = launch.run_state(str(out))
    assert state == 'interrupted' and (damage == 'interrupted' or 'results.json is missing or damaged' in why)
    assert launch.completed_runs(str(sweep_dir)) == []
    ckpt = (out / 'ckpt.pt').read_bytes()
    done = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '2', '--out-dir', out,
                                      '--resume'], tmp_path)
    assert done.returncode == 0 and 'nothing to do' in done.stdout, done.stderr[-2000:]
    assert errors(done) == [] and f"{out}/results.json " in done.stderr and 'rewritten from' in done.stderr
    res = json.loads((out / 'results.json').read_text())
    assert res['status'] == 'completed' and res['step'] == res['steps'] == 2 and res['val_loss'] == good['val_loss']
    assert (out / 'ckpt.pt').read_bytes() == ckpt                          # nothing trained
    assert launch.run_state(str(out))[0] == 'completed'
    assert [r['name'] for r in launch.completed_runs(str(sweep_dir))] == ['mdlm_nano_1e+10']


@pytest.mark.slow
def test_resume_with_another_micro_batch_size_continues(corpus, trained, tmp_path, runner):
    out = copy(trained, tmp_path)
    more = runner('train.py', TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '4', '--out-dir', out,
                                          '--resume', '--micro-batch-size', '1'], tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    assert 'the micro-batch size or the process count changed' in more.stdout
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['step'] == 4 and ckpt['layout']['micro_batch_size'] == 1
    assert ckpt['loader']['step'] == 4 * 4                                 # 16 micro-batches of 1 in this epoch


@pytest.mark.slow
def test_ddp_resume_restores_every_rank_stream(corpus, tmp_path):
    """2 gloo processes: 4 MDLM steps straight == 2 steps, then --resume to 4, bit for bit (each rank restores its
    own masks' stream; a constant learning rate makes the schedule independent of --max-steps)."""
    common = TINY + ['--data', corpus, '--family', 'mdlm', '--eval-every', '2', '--warmup-steps', '0', '--min-lr',
                     '3e-3', '--micro-batch-size', '1']
    for args in (['--max-steps', '4', '--out-dir', 'straight'], ['--max-steps', '2', '--out-dir', 'resumed'],
                 ['--max-steps', '4', '--out-dir', 'resumed', '--resume']):
        out = run_script('train.py', common + args, tmp_path, processes=2)
        assert out.returncode == 0, out.stderr[-3000:]
    a = torch.load(tmp_path / 'straight' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'resumed' / 'ckpt.pt', weights_only=True)
    assert len(b['rng']) == 2 and not torch.equal(b['rng'][0]['cpu'], b['rng'][1]['cpu'])
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k


@pytest.mark.slow
def test_validation_loss_is_the_same_for_one_and_two_processes(corpus, tmp_path, runner):
    """--lr 1e-30 leaves the weights bitwise unchanged, so the validation after step 1 compares the evaluation
    alone: 1 process x micro-batch 4 and 2 gloo processes x micro-batch 1 give the same NELBO."""
    common = TINY + ['--data', corpus, '--family', 'mdlm', '--max-steps', '1', '--lr', '1e-30', '--eval-sequences',
                     '7']
    one = runner('train.py', common + ['--out-dir', 'one'], tmp_path)
    two = run_script('train.py', common + ['--out-dir', 'two', '--micro-batch-size', '1'], tmp_path, processes=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    val = [json.loads((tmp_path / d / 'results.json').read_text())['val_loss'] for d in ('one', 'two')]
    assert val[0] == pytest.approx(val[1], rel=1e-6, abs=0)
