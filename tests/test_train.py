"""train.py and sample.py end to end: CLI errors, 1 process vs 2-process DDP vs gradient accumulation, resume.

    python -m pytest -q tests/test_train.py          # ~30 s: it runs train.py (and torchrun) several times
"""
import json
import os
import subprocess
import sys

import pytest
import torch

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


@pytest.mark.slow
def test_ddp_and_accumulation_give_the_same_update_as_one_process(corpus, tmp_path):
    """The same global batch of 8 sequences: 1 process x 8, 1 process x 4 x 2 accumulation, 2 DDP ranks x 4.
    After 3 AdamW steps the weights agree (up to float summation order)."""
    common = TINY + ['--data', corpus, '--batch-size', '8', '--max-steps', '3', '--eval-every', '100']
    run(common + ['--out-dir', 'one'], cwd=tmp_path)
    run(common + ['--out-dir', 'accum', '--micro-batch-size', '4'], cwd=tmp_path)
    run(common + ['--out-dir', 'ddp'], cwd=tmp_path, torchrun=True)
    one, accum, ddp = (weights(tmp_path / d) for d in ('one', 'accum', 'ddp'))
    torch.manual_seed(1)  # train.py's initial weights: --seed 1, before any other draw
    init = Model(get_config('nano', 257, 32)).state_dict()
    moved = max((one[k] - init[k]).abs().max().item() for k in one)
    assert moved > 1e-3  # the steps really changed the weights
    for k in one:
        torch.testing.assert_close(accum[k], one[k], atol=1e-4, rtol=0)  # AdamW moves each weight ~3e-3 a step
        torch.testing.assert_close(ddp[k], one[k], atol=1e-4, rtol=0)
    # Adam is blind to the gradient's scale, so check the loss scaling through the logged loss of the global batch
    step_losses = [[float(line.split('| loss ')[1].split()[0]) for line in open(tmp_path / d / 'log.txt')
                    if line.startswith('step ') and '| loss ' in line] for d in ('one', 'accum', 'ddp')]
    assert len(step_losses[0]) == 3
    torch.testing.assert_close(torch.tensor(step_losses[1]), torch.tensor(step_losses[0]), atol=2e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(step_losses[2]), torch.tensor(step_losses[0]), atol=2e-4, rtol=0)
    res = json.loads((tmp_path / 'ddp' / 'results.json').read_text())
    assert res['world_size'] == 2 and res['steps'] == 3 and res['tokens'] == 3 * 8 * 32


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
