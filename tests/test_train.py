"""train.py and sample.py end to end: CLI errors, 1 process vs 2-process DDP vs FSDP vs gradient accumulation,
checkpoints that resume across modes and process counts, activation checkpointing, lagged logging, resume.

    python -m pytest -q tests/test_train.py          # ~2 min: it runs train.py (and torchrun) several times
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nanodllm import memory
from nanodllm.config import get_config
from nanodllm.model import Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = None  # the session's warm script runner (conftest.py), set for every test by _warm_runner
TINY = ['--size', 'nano', '--seq-len', '32', '--eval-sequences', '8', '--log-every', '1', '--lr', '3e-3',
        '--warmup-steps', '1', '--device', 'cpu']


def run(args, cwd, torchrun=False, check=True, script='train.py'):
    """`python script args` (through the session's warm runner, tests/scripts.py) or torchrun with 2 processes."""
    if torchrun:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
               os.path.join(ROOT, script)] + args
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
        if out.returncode and 'address already in use' in out.stderr.lower():  # a port race, not a bug
            out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    else:
        out = RUNNER(script, args, cwd)
    if check and out.returncode:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(autouse=True)
def _warm_runner(runner):
    global RUNNER
    RUNNER = runner


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    """~40 KB of text: enough for a few batches of 32-byte blocks, train and val."""
    d = tmp_path_factory.mktemp('corpus')
    words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings'.split()
    g = torch.Generator().manual_seed(0)
    text = ' '.join(words[i] for i in torch.randint(0, len(words), (8000,), generator=g).tolist())
    (d / 'text.txt').write_text(text)
    return str(d / 'text.txt')


def weights(out_dir):
    return torch.load(os.path.join(out_dir, 'ckpt.pt'), weights_only=True)['model']


@pytest.mark.parametrize('flag,value', [('--family', 'nope'), ('--size', 'nope')])
def test_unknown_family_or_size_is_a_one_line_error(flag, value, tmp_path):
    out = run([flag, value], cwd=tmp_path, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and 'valid:' in lines[0]
    assert ('ar, mdlm, duo, eso' in lines[0]) if flag == '--family' else ('nano' in lines[0] and '1.7b' in lines[0])


def logged(out_dir, kind='loss'):
    """{step: {'loss': '5.5452', 'lr': ..., 'grad': ..., 'dt': ...}} from the training lines of log.txt (kind='val':
    the validation lines, {step: {'val': '5.3243 (ppl 205.25)'}})."""
    out = {}
    for line in open(os.path.join(out_dir, 'log.txt')):
        parts = line.strip().split(' | ')
        if parts[0].startswith('step ') and len(parts) > 1 and parts[1].startswith(kind + ' '):
            out[int(parts[0].split()[1])] = dict(part.split(' ', 1) for part in parts[1:])
    return out


def assert_same_update(got, want, what):
    """AdamW moves each weight ~3e-3 a step (the learning rate) whatever the gradient's size, so a missing or
    partial gradient reduction moves many weights by that much. Another summation order changes nearly none:
    only weights whose gradient is ~1e-9, under Adam's eps, where m / (sqrt(v) + eps) is sensitive (seen: 1 of
    16k weights off by 8e-5 under FSDP; since the backbone's fast paths, 1 of 16k off by 4.4e-4 between one process
    and accumulation, where sqrt(v) = 5e-9 < eps, and 4.5e-4 after a DDP -> FSDP resume). So: no weight off by a
    third of a step (1e-3), and a mean under 1e-6, which a missing or partial reduction exceeds by far."""
    diff = (got - want).abs()
    assert diff.max() < 1e-3 and diff.mean() < 1e-6, (what, diff.max().item(), diff.mean().item())


def losses(out_dir):
    return {step: float(fields['loss']) for step, fields in logged(out_dir).items()}


# the same global batch of 8 sequences in every mode; a constant learning rate (warmup 1, min-lr = lr), so that a run
# continued with --resume to more steps equals a longer straight run
EQUIV = TINY + ['--batch-size', '8', '--eval-every', '100', '--min-lr', '3e-3']


@pytest.fixture(scope='module')
def modes(corpus, tmp_path_factory, runner):
    """3 AdamW steps in five modes: 1 process x 8, 1 process x 4 x 2 accumulation, 2 DDP ranks x 4, --fsdp in one
    process (nothing to shard: a plain run), 2 FSDP ranks x 4. Returns the folder that holds their out-dirs."""
    d = tmp_path_factory.mktemp('modes')
    common = EQUIV + ['--data', corpus, '--max-steps', '3']
    for name, extra in (('one', []), ('accum', ['--micro-batch-size', '4']), ('fsdp1', ['--fsdp'])):
        out = runner('train.py', common + ['--out-dir', name] + extra, d)
        assert out.returncode == 0, out.stderr[-3000:]
    run(common + ['--out-dir', 'ddp'], cwd=d, torchrun=True)
    run(common + ['--out-dir', 'fsdp2', '--fsdp'], cwd=d, torchrun=True)
    return d


@pytest.mark.slow
def test_ddp_fsdp_and_accumulation_give_the_same_update_as_one_process(modes):
    """After 3 AdamW steps the weights of every mode agree with one process (up to float summation order), and so
    do the logged losses of the global batch and gradient norms."""
    one = weights(modes / 'one')
    torch.manual_seed(1)  # train.py's initial weights: --seed 1, before any other draw
    init = Model(get_config('nano', 257, 32)).state_dict()
    moved = max((one[k] - init[k]).abs().max().item() for k in one)
    assert moved > 1e-3  # the steps really changed the weights
    want = logged(modes / 'one')
    assert sorted(want) == [0, 1, 2]
    for mode in ('accum', 'ddp', 'fsdp1', 'fsdp2'):
        other = weights(modes / mode)
        assert set(other) == set(one)
        for k in one:
            assert_same_update(other[k], one[k], f"{mode} {k}")
        # Adam is blind to the gradient's scale, so check the loss scaling through the loss of the global batch
        got = logged(modes / mode)
        assert sorted(got) == sorted(want), mode
        for step in want:
            for field in ('loss', 'grad'):
                assert float(got[step][field]) == pytest.approx(float(want[step][field]), abs=2e-4), (mode, step)
    results = {mode: json.loads((modes / mode / 'results.json').read_text()) for mode in ('ddp', 'fsdp1', 'fsdp2')}
    assert results['ddp']['world_size'] == 2 and results['ddp']['steps'] == 3 and results['ddp']['tokens'] == 3 * 8 * 32
    assert [results[m]['fsdp'] for m in ('ddp', 'fsdp1', 'fsdp2')] == [False, False, True]  # one process: unsharded
    assert 'nothing to shard' in (modes / 'fsdp1' / 'log.txt').read_text()
    for mode, fsdp in (('ddp', False), ('fsdp2', True)):  # the planner's total for this very configuration
        plan = memory.plan(get_config('nano', 257, 32), 'ar', 4, nproc=2, fsdp=fsdp, dtype='float32', grad_accum=1)
        assert results[mode]['planned_peak_bytes'] == plan['total']
    assert results['fsdp2']['peak_memory_bytes'] is None and results['fsdp2']['activation_checkpointing'] is False


@pytest.mark.slow
def test_checkpoints_resume_across_fsdp_ddp_and_one_process_and_sample(modes, corpus, tmp_path):
    """The FSDP checkpoint (2 ranks, step 3) continues to step 4 under DDP and in one process, the DDP one under
    FSDP; each equals 4 steps straight in one process. sample.py reads the FSDP checkpoint as any other."""
    common = EQUIV + ['--data', corpus, '--max-steps', '4', '--resume']
    for src, dst in (('fsdp2', 'fsdp_as_ddp'), ('fsdp2', 'fsdp_as_one'), ('ddp', 'ddp_as_fsdp')):
        shutil.copytree(modes / src, tmp_path / dst)
    straight = run(EQUIV + ['--data', corpus, '--max-steps', '4', '--out-dir', 'straight'], cwd=tmp_path)
    assert straight.returncode == 0
    run(common + ['--out-dir', 'fsdp_as_ddp'], cwd=tmp_path, torchrun=True)
    run(common + ['--out-dir', 'fsdp_as_one'], cwd=tmp_path)
    run(common + ['--out-dir', 'ddp_as_fsdp', '--fsdp'], cwd=tmp_path, torchrun=True)
    want, want_loss = weights(tmp_path / 'straight'), losses(tmp_path / 'straight')
    for name in ('fsdp_as_ddp', 'fsdp_as_one', 'ddp_as_fsdp'):
        ckpt = torch.load(tmp_path / name / 'ckpt.pt', weights_only=True)
        assert ckpt['step'] == 4 and ckpt['layout']['world_size'] == (1 if name == 'fsdp_as_one' else 2)
        for k in want:
            assert_same_update(ckpt['model'][k], want[k], f"{name} {k}")
        assert losses(tmp_path / name)[3] == pytest.approx(want_loss[3], abs=2e-4)  # the step after the resume
        assert json.loads((tmp_path / name / 'results.json').read_text())['fsdp'] == (name == 'ddp_as_fsdp')
    out = run(['--ckpt', str(modes / 'fsdp2' / 'ckpt.pt'), '--num-samples', '1', '--length', '16'], tmp_path,
              script='sample.py')
    assert out.stdout.count('=== sample') == 1


@pytest.mark.slow
@pytest.mark.parametrize('family_flags', [[], ['--family', 'eso', '--alpha0', '0.5', '--batch-split', '0.5']])
def test_activation_checkpointing_gives_the_same_weights(corpus, tmp_path, family_flags):
    """Recomputing each block in the backward changes no value: the same losses and weights after 3 steps (AR, and
    Eso-LM with its masked sequential part and its noise drawn inside the loss)."""
    common = TINY + ['--data', corpus, '--batch-size', '4', '--max-steps', '3'] + family_flags
    run(common + ['--out-dir', 'plain'], cwd=tmp_path)
    run(common + ['--out-dir', 'ckpt', '--activation-checkpointing'], cwd=tmp_path)
    plain, recomputed = weights(tmp_path / 'plain'), weights(tmp_path / 'ckpt')
    for k in plain:
        torch.testing.assert_close(recomputed[k], plain[k], atol=1e-6, rtol=0, msg=k)
    assert losses(tmp_path / 'ckpt') == pytest.approx(losses(tmp_path / 'plain'), abs=1e-4)
    assert json.loads((tmp_path / 'ckpt' / 'results.json').read_text())['activation_checkpointing'] is True


@pytest.mark.slow
def test_lagged_logging_logs_the_values_of_logging_every_step(corpus, tmp_path):
    """--log-every 3 reads the loss and gradient norm kept on the device only at steps 0, 3, 6: the same values as
    --log-every 1 logs for those steps, and the same training (bitwise)."""
    common = TINY[:TINY.index('--log-every')] + TINY[TINY.index('--log-every') + 2:] + [
        '--data', corpus, '--batch-size', '4', '--max-steps', '7', '--family', 'mdlm', '--eval-every', '4']
    run(common + ['--out-dir', 'every', '--log-every', '1'], cwd=tmp_path)
    run(common + ['--out-dir', 'lagged', '--log-every', '3'], cwd=tmp_path)
    every, lagged = logged(tmp_path / 'every'), logged(tmp_path / 'lagged')
    assert sorted(every) == list(range(7)) and sorted(lagged) == [0, 3, 6]
    for step in lagged:  # the same text
        assert [lagged[step][f] for f in ('loss', 'lr', 'grad')] == [every[step][f] for f in ('loss', 'lr', 'grad')]
    assert logged(tmp_path / 'lagged', 'val') == logged(tmp_path / 'every', 'val')
    a, b = weights(tmp_path / 'every'), weights(tmp_path / 'lagged')
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_continues_exactly(corpus, tmp_path):
    """4 steps straight == 2 steps, then --resume to 4. A constant learning rate makes the schedule independent of
    --max-steps; the data order continues from the loader state saved in the checkpoint."""
    common = TINY + ['--data', corpus, '--batch-size', '4', '--eval-every', '2', '--warmup-steps', '0',
                     '--min-lr', '3e-3']
    run(common + ['--max-steps', '4', '--out-dir', 'straight'], cwd=tmp_path)
    run(common + ['--max-steps', '2', '--out-dir', 'resumed'], cwd=tmp_path)
    run(common + ['--max-steps', '4', '--out-dir', 'resumed', '--resume'], cwd=tmp_path)
    assert torch.load(tmp_path / 'resumed' / 'ckpt.pt', weights_only=True)['step'] == 4
    straight, resumed = weights(tmp_path / 'straight'), weights(tmp_path / 'resumed')
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], atol=1e-6, rtol=0)
    out = run(common + ['--max-steps', '4', '--out-dir', 'resumed', '--resume', '--seq-len', '16'], cwd=tmp_path,
              check=False)
    assert out.returncode == 2 and '--seq-len' in out.stderr


@pytest.mark.slow
def test_train_then_sample_from_the_checkpoint(corpus, tmp_path):
    run(TINY + ['--data', corpus, '--batch-size', '4', '--max-steps', '2', '--out-dir', 'o'], cwd=tmp_path)
    out = run(['--ckpt', 'o/ckpt.pt', '--prompt', 'the ', '--num-samples', '2', '--length', '20'], tmp_path,
              script='sample.py')
    assert out.stdout.count('=== sample') == 2 and '15 network calls' in out.stdout  # BOS + 'the ' = 5 prompt tokens
    bad = run(['--ckpt', 'o/ckpt.pt', '--prompt', 'x' * 40, '--length', '20'], tmp_path, check=False,
              script='sample.py')
    assert bad.returncode == 2 and 'shorten --prompt' in bad.stderr and 'Traceback' not in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize('family_flags,sample_flags,nfe', [
    (['--family', 'mdlm', '--loss', 'elbo'], ['--steps', '4', '--no-cache'], 5),
    (['--family', 'duo'], ['--steps', '4', '--noise-removal', 'greedy'], 5),
    (['--family', 'eso', '--alpha0', '0.5', '--batch-split', '0.5'], ['--alpha0', '0'], 16),
])
def test_every_family_trains_and_samples(corpus, tmp_path, family_flags, sample_flags, nfe):
    """train.py runs each diffusion family; sample.py reads the family and options from the checkpoint, shows the
    intermediate states, and reports the network calls (eso at sampling-time alpha0 = 0: one call per token)."""
    run(TINY + ['--data', corpus, '--batch-size', '4', '--max-steps', '2', '--out-dir', 'o'] + family_flags,
        cwd=tmp_path)
    res = json.loads((tmp_path / 'o' / 'results.json').read_text())
    assert res['family'] == family_flags[1] and res['steps'] == 2
    out = run(['--ckpt', 'o/ckpt.pt', '--num-samples', '1', '--length', '16', '--show-steps', '1'] + sample_flags,
              tmp_path, script='sample.py')
    assert f'{nfe} network calls' in out.stdout and out.stdout.count('[call ') == nfe


def test_options_that_do_not_apply_or_do_not_fit_are_one_line_errors(corpus, tmp_path):
    out = run(TINY + ['--data', corpus, '--family', 'ar', '--loss', 'elbo'], cwd=tmp_path, check=False)
    assert out.returncode == 2 and '--loss does not apply' in out.stderr
    out = run(TINY + ['--data', corpus, '--batch-size', '4', '--family', 'eso', '--alpha0', '0.5'], cwd=tmp_path,
              check=False)
    assert out.returncode == 2 and 'batch_split' in out.stderr and 'Traceback' not in out.stderr
    out = run(TINY + ['--data', corpus, '--batch-size', '100000'], cwd=tmp_path, check=False)
    assert out.returncode == 2 and 'smaller --batch-size' in out.stderr and 'Traceback' not in out.stderr
    out = run(TINY + ['--data', corpus, '--fsdp', '--dtype', 'float16'], cwd=tmp_path, check=False)
    assert out.returncode == 2 and out.stderr.count('\n') == 1
    assert '--fsdp does not work with --dtype float16' in out.stderr
