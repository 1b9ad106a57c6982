"""Discrete consistency distillation (nanodllm/distill.py, spec §3.6): the shared-xi coupling, the KL, the rounds,
the teacher refreshes, the distillation step itself end to end, and an exact resume mid-round through train.py.

Run: python -m pytest -q tests/test_distill.py      # ~30 s (the train.py runs are marked slow)
"""
import copy
import os
import shutil

import pytest
import torch

from helpers import make_model
from nanodllm import distill
from scripts import make_corpus

V = 11


def test_gap_doubles_each_round():
    assert [distill.gap(s, 10, 64) for s in (0, 9, 10, 19, 20, 35)] == [1 / 64, 1 / 64, 2 / 64, 2 / 64, 4 / 64, 8 / 64]


def test_times_are_discrete_shifted_and_s_is_t_minus_dt():
    t, s = distill.sample_times(64, 1 / 8, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(t - s, torch.full_like(t, 1 / 8)) and (t <= 1).all() and (s >= 1 / 16 - 1e-12).all()
    assert torch.allclose(t * 16, (t * 16).round())                   # on the grid {1/T, ..., 1}


def test_shared_xi_coupling():
    """One xi: dt = 0 gives z_s = z_t; for s < t, z_s is z_t or x0 (the non-x0 entries keep their order), and a
    token that is clean at t stays clean at s. Independent draws would break both."""
    torch.manual_seed(0)
    x0 = torch.randint(0, V, (64, 16))
    t = torch.rand(64, dtype=torch.float64)
    z_t, z_s, sigma_t, sigma_s = distill.coupled_latents(x0, t, t, V)
    assert torch.equal(z_t, z_s) and torch.equal(sigma_t, sigma_s)
    s = t * 0.5
    z_t, z_s, sigma_t, sigma_s = distill.coupled_latents(x0, t, s, V)
    assert ((z_s == z_t) | (z_s == x0)).all()
    assert (z_s[z_t == x0] == x0[z_t == x0]).all()
    assert (z_s == x0).sum() > (z_t == x0).sum() and (sigma_s < sigma_t).all()
    _, z_other, _, _ = distill.coupled_latents(x0, s, s, V)          # a fresh xi
    assert not ((z_other == z_t) | (z_other == x0)).all()


def test_kl_is_zero_when_teacher_is_student_and_dt_is_zero():
    model = make_model(vocab_size=V)
    x0 = torch.randint(0, V - 1, (4, 16))
    nll, n = distill.loss(model, model, x0, dt=0.0, T=16, generator=torch.Generator().manual_seed(1))
    assert n == 64 and nll.item() == 0.0
    for direction in ('bwd', 'fwd'):                                   # dt > 0: the inputs differ, so does the output
        nll, _ = distill.loss(model, model, x0, dt=0.5, T=16, direction=direction,
                              generator=torch.Generator().manual_seed(1))
        assert nll.item() > 1e-4


def test_kl_directions():
    a, b = torch.randn(3, 5, V), torch.randn(3, 5, V)
    a[..., -1] = b[..., -1] = -1e6                                     # the mask logit, as the backbone writes it
    p, q = a.softmax(-1), b.softmax(-1)
    assert torch.allclose(distill.kl(a, b, 'bwd'), (p * (p / q).log()).nan_to_num().sum(-1), atol=1e-5)
    assert torch.allclose(distill.kl(a, b, 'fwd'), (q * (q / p).log()).nan_to_num().sum(-1), atol=1e-5)


def test_a_distillation_step_lowers_the_kl_on_a_fixed_batch():
    """The distillation step itself, end to end (the authors' crashed for six weeks, s-sahoo/duo 2740106): the student
    learns, the teacher does not move and gets no gradient."""
    torch.manual_seed(3)
    student = make_model(vocab_size=V).train()
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    x0 = torch.randint(0, V - 1, (8, 16))
    xi = torch.randn(8, 16, V)
    opt = torch.optim.Adam(student.parameters(), lr=3e-4)
    losses = []
    for _ in range(20):
        nll, n = distill.loss(student, teacher, x0, dt=0.25, T=8, generator=torch.Generator().manual_seed(0), xi=xi)
        opt.zero_grad()
        (nll / n).backward()
        opt.step()
        losses.append(nll.item() / n)
    assert max(losses[-3:]) < 0.8 * losses[0], losses                # (a wrong sign makes it grow)
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_is_refreshed_at_K_2K_and_only_then():
    student = make_model(vocab_size=V)
    d = distill.Distiller(student, out_dir=None, every=3, T=16)
    x0 = torch.randint(0, V - 1, (2, 16))
    refreshed = []
    for step in range(8):
        before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
        fn = d.loss_at(step)
        changed = any(not torch.equal(before[k], v) for k, v in d.teacher.state_dict().items())
        if changed:
            refreshed.append(step)
        assert all(torch.equal(a, b) for a, b in zip(d.teacher.state_dict().values(),
                                                     student.state_dict().values())) == (step % 3 == 0)
        fn(student, x0)
        with torch.no_grad():                                          # an optimizer step of the student
            student.head.weight.add_(0.01)
    assert refreshed == [0, 3, 6] and d.state(7)['distill']['round'] == 2
    assert all(not p.requires_grad for p in d.teacher.parameters())


# -----------------------------------------------------------------------------
# through train.py

TINY = ['--size', 'nano', '--seq-len', '32', '--eval-sequences', '8', '--log-every', '1', '--lr', '3e-3',
        '--warmup-steps', '1', '--device', 'cpu', '--batch-size', '4', '--family', 'duo']


@pytest.fixture(scope='module')
def base(tmp_path_factory, runner):
    tmp = tmp_path_factory.mktemp('distill')
    corpus = make_corpus(tmp / 'text.txt')
    done = runner('train.py', TINY + ['--data', corpus, '--max-steps', '3', '--out-dir', tmp / 'base'], tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return corpus, str(tmp / 'base' / 'ckpt.pt')


def logged_losses(out_dir):
    return [line.split('| loss ')[1].split()[0] for line in open(os.path.join(out_dir, 'log.txt'))
            if line.startswith('step ') and '| loss ' in line]


@pytest.mark.slow
def test_distillation_resumes_mid_round_bit_exactly(base, tmp_path, runner):
    """6 DCD steps, K = 3 (refreshes at 0 and 3), checkpoints at 2, 4, 6; killed in step 5 and resumed from step 4,
    mid-round 1: its teacher comes back from teacher-round1.pt. Final weights and every logged loss are equal."""
    corpus, ckpt = base
    common = TINY + ['--data', corpus, '--max-steps', '6', '--eval-every', '2', '--distill-from', ckpt,
                     '--distill-every', '3', '--distill-T', '8']
    straight = runner('train.py', common + ['--out-dir', 'straight'], tmp_path)
    killed = runner('train.py', common + ['--out-dir', 'killed'], tmp_path, kill_at=[7])
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert killed.returncode == -9
    assert torch.load(tmp_path / 'killed' / 'ckpt.pt', weights_only=True)['step'] == 4
    shutil.copytree(tmp_path / 'killed', tmp_path / 'no_teacher')
    resumed = runner('train.py', common + ['--out-dir', 'killed', '--resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / 'straight' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'killed' / 'ckpt.pt', weights_only=True)
    assert a['step'] == b['step'] == 6 and a['distill']['round'] == b['distill']['round'] == 2
    assert 'teacher' not in a and all(k in a['model'] for k in a['model'])
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    want, got = logged_losses(tmp_path / 'straight'), logged_losses(tmp_path / 'killed')
    assert got[:4] + got[-2:] == want and got[4] == want[4]           # step 4 logged twice: before the kill, after
    # the teacher files: round n = the student at step 3n, sampleable checkpoints (round 0 = the base model)
    t0 = torch.load(tmp_path / 'straight' / 'teacher-round0.pt', weights_only=True)
    base_weights = torch.load(ckpt, weights_only=True)['model']
    assert t0['step'] == 0 and all(torch.equal(t0['model'][k], base_weights[k]) for k in base_weights)
    # without its teacher file the mid-round resume is refused in one line, not continued with a wrong teacher
    os.remove(tmp_path / 'no_teacher' / 'teacher-round1.pt')
    refused = runner('train.py', common + ['--out-dir', 'no_teacher', '--resume'], tmp_path)
    errors = [line for line in refused.stderr.splitlines() if line.startswith('error:')]
    assert refused.returncode == 2 and len(errors) == 1 and 'teacher-round1.pt' in errors[0], refused.stderr[-2000:]


@pytest.mark.slow
def test_curriculum_run_switches_to_the_discrete_loss_and_resumes(base, tmp_path, runner):
    """--curriculum through train.py: the schedule is logged, the run completes, and a resume is exact."""
    corpus, _ = base
    common = TINY + ['--data', corpus, '--max-steps', '6', '--eval-every', '2', '--curriculum',
                     '--curriculum-steps', '1', '3']
    straight = runner('train.py', common + ['--out-dir', 'straight'], tmp_path)
    killed = runner('train.py', common + ['--out-dir', 'killed'], tmp_path, kill_at=[5])
    resumed = runner('train.py', common + ['--out-dir', 'killed', '--resume'], tmp_path)
    assert straight.returncode == 0 and resumed.returncode == 0, (straight.stderr[-2000:], resumed.stderr[-2000:])
    assert 'Duo curriculum (spec §3.5): steps 0-3' in open(tmp_path / 'straight' / 'log.txt').read()
    a = torch.load(tmp_path / 'straight' / 'ckpt.pt', weights_only=True)['model']
    b = torch.load(tmp_path / 'killed' / 'ckpt.pt', weights_only=True)['model']
    assert all(torch.equal(a[k], b[k]) for k in a)
