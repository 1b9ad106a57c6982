"""nanodllm.parallel: FSDP2 and DDP over 2 gloo processes against one process, and full-state checkpoints that are
the same dicts in every mode and load across modes and process counts.

    python -m pytest -q tests/test_parallel.py          # ~2 min: it launches tests/parallel_worker.py 8 times

Every worker run takes the same global batch of 8 sequences per step (2 ranks x 2 micro-steps x 2 sequences, or 4
micro-steps of 2 in one process), so every mode must agree on the losses, gradient norms and weights.
"""
import copy
import os
import subprocess
import sys

import pytest
import torch
from helpers import make_model

from nanodllm import ar, memory, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, 'tests', 'parallel_worker.py')


def worker(args, cwd, torchrun=False):
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'] if torchrun
           else [sys.executable]) + [WORKER] + args
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if torchrun and out.returncode and 'address already in use' in out.stderr.lower():  # a port race, not a bug
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return torch.load(os.path.join(cwd, args[args.index('--out') + 1]), weights_only=True)


def assert_same_state(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """3 steps in one process and under FSDP over 2 processes, from the same initial weights."""
    d = tmp_path_factory.mktemp('parallel')
    return d, worker(['--out', 'single.pt'], d), worker(['--fsdp', '--out', 'fsdp.pt'], d, torchrun=True)


@pytest.mark.slow
def test_fsdp_matches_one_process(runs):
    """Same AR losses and gradient norms (clipped at 0.5: the clip is active), the same weights and AdamW states
    after 3 steps, and the same evaluation loss; the state gathered from the shards is the plain
    Model.state_dict() (the worker checks parallel.full_model against it); each rank holds its shard, as many
    bytes as the planner says."""
    _, single, fsdp = runs
    torch.testing.assert_close(torch.tensor(fsdp['losses']), torch.tensor(single['losses']), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(fsdp['norms']), torch.tensor(single['norms']), atol=1e-5, rtol=0)
    assert min(single['norms']) > 0.5
    assert fsdp['eval_loss'] == pytest.approx(single['eval_loss'], abs=1e-5)  # a no-grad forward over the shards
    assert_same_state(fsdp['model'], single['model'], atol=1e-5)
    assert set(fsdp['model']) == set(make_model(vocab_size=37, n_layer=2, n_head=2, n_embd=32).state_dict())
    assert fsdp['optimizer']['param_groups'] == single['optimizer']['param_groups']  # torch.optim's format
    for i, s in single['optimizer']['state'].items():
        assert_same_state(fsdp['optimizer']['state'][i], s, atol=1e-6)
    cfg = make_model(vocab_size=37, n_layer=2, n_head=2, n_embd=32).cfg
    for held, world, fsdp_mode in [(single['held'], 1, False), (fsdp['held'], 2, True)]:
        plan = memory.plan(cfg, 'ar', 2, nproc=world, fsdp=fsdp_mode, dtype='float32')
        assert held['parameters'] == plan['parameters']          # rank 0's padded shards
        assert held['optimizer'] == plan['optimizer']
        assert held['gradients'] == plan['parameters']


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_under_fsdp_ddp_and_one_process(runs):
    """The FSDP-written checkpoint loads (a gather right after the load gives it back bit for bit) and continues for
    2 more steps under FSDP with activation checkpointing, DDP with activation checkpointing, and one process:
    all three equal 5 steps in one process without a checkpoint."""
    d, _, _ = runs
    straight = worker(['--steps', '5', '--out', 'straight.pt'], d)
    resumed = [worker(['--fsdp', '--activation-checkpointing', '--load', 'fsdp.pt', '--steps', '2',
                       '--out', 'r_fsdp.pt'], d, torchrun=True),
               worker(['--activation-checkpointing', '--load', 'fsdp.pt', '--steps', '2', '--out', 'r_ddp.pt'], d,
                      torchrun=True),
               worker(['--load', 'fsdp.pt', '--steps', '2', '--out', 'r_one.pt'], d)]
    for r in resumed:
        assert r['step'] == 5
        torch.testing.assert_close(torch.tensor(r['losses']), torch.tensor(straight['losses'][3:]), atol=1e-5, rtol=0)
        assert_same_state(r['model'], straight['model'], atol=2e-5)


@pytest.mark.slow
def test_fsdp_with_bf16_weights_tracks_autocast(tmp_path):
    """FSDP gathering bf16 weights (fp32 reduction, fp32 residual stream) against one process under bf16 autocast
    with fp32 weights: the same losses to bf16 precision (the GPU configuration, here on gloo)."""
    one = worker(['--bf16', '--steps', '2', '--out', 'one.pt'], tmp_path)
    fsdp = worker(['--bf16', '--fsdp', '--steps', '2', '--out', 'fsdp.pt'], tmp_path, torchrun=True)
    torch.testing.assert_close(torch.tensor(fsdp['losses']), torch.tensor(one['losses']), rtol=1e-2, atol=0)
    assert all(v.dtype == torch.float32 for v in fsdp['model'].values())  # the checkpoint keeps the fp32 weights


def test_full_state_dict_of_one_process_is_the_plain_state_and_loads_back():
    """Without torch.distributed: the full states are Model.state_dict() and optimizer.state_dict(), and loading
    them into a fresh model and optimizer continues the training exactly."""
    x = torch.randint(0, 22, (2, 16))

    def step(m, opt):
        ar.loss(m, x)[0].backward()
        opt.step()
        opt.zero_grad()
    model = make_model(vocab_size=23, n_layer=2, n_head=2, n_embd=16).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step(model, optimizer)
    model_state, optim_state = copy.deepcopy(parallel.full_state_dict(model, optimizer))
    index_state = copy.deepcopy(optimizer.state_dict())
    assert_same_state(model_state, model.state_dict(), atol=0)
    assert optim_state['param_groups'] == index_state['param_groups']  # torch.optim's own format
    for i, s in index_state['state'].items():
        assert_same_state(optim_state['state'][i], s, atol=0)
    step(model, optimizer)  # the reference: one more step
    for state in (optim_state, index_state):  # through torch.distributed.checkpoint, and torch.optim's own
        fresh = make_model(vocab_size=23, n_layer=2, n_head=2, n_embd=16, seed=5).train()
        fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
        parallel.load_full_state_dict(fresh, fresh_optimizer, model_state, state)
        step(fresh, fresh_optimizer)
        assert_same_state(fresh.state_dict(), model.state_dict(), atol=0)
    assert parallel.full_model(model, 'cpu') is model  # nothing to gather without FSDP
