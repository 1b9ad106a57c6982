"""Discrete Consistency Distillation (DCD) of a trained Duo model into a few-step sampler (spec §3.6; Duo paper §4).

The Gaussian latent of nanodllm/curriculum.py gives Duo a deterministic coupling: with ONE noise draw xi per token,
w_t = alpha~_t e_x0 + sigma~_t xi and w_s = alpha~_s e_x0 + sigma~_s xi at two times s = t - dt < t give two
uniform-state latents z_t = argmax w_t and z_s = argmax w_s on the same "trajectory" (the discrete image of the
Gaussian probability-flow ODE). The student, on z_t, learns to predict what the teacher predicts on the less noisy
z_s: KL(p_student(. | z_t) || p_teacher(. | z_s)) per token (`kl-bwd`, the authors' default; `kl-fwd` the other way).
The teacher is a frozen copy of the student, refreshed every K steps (step 0 included); the gap doubles with each
refresh: round n = step // K has dt = 2^n / T. Each round teaches the student to jump twice as far as its teacher.
What this module owns:
- `gap`, `coupled_latents`, `kl`, `loss` (one distillation loss, the teacher given);
- `load_student`: the `--distill-from` checks (a Duo checkpoint of this run's model and tokenizer) and the weights;
- `Distiller`: train.py's objective. `loss_at(step)` refreshes the teacher at step % K == 0; `state()` puts the
  round in the checkpoint. The teacher is neither in the optimizer nor in ckpt.pt: at each refresh it is written
  to <out-dir>/teacher-round{n}.pt (a plain, sampleable checkpoint: the student at the start of round n, i.e. the
  model after round n - 1; round 0 = the base model). `--resume` mid-round loads that file, so the continuation is
  bit-exact (tests/test_distill.py); a resume at a refresh step takes the teacher from the student, as always.
Time (spec §0.3, §3.6): t antithetic, discretised to {1/T, ..., 1}, then t <- min(t + dt, 1), s = t - dt; gamma
linear in t on the authors' [-4, -1] for GPT-2's vocabulary, or the range with the same alpha range for another V
(curriculum.matched_gamma_range: alpha in [0.006, 0.9987]); alpha = T(gamma) is used only for sigma = -log alpha.
The teacher has no dropout (the backbone has none; the authors' teacher runs with dropout 0.1 active).
"""
import os

import torch

from . import checkpoint, curriculum, noise

GAMMA_RANGE = (-4.0, -1.0)   # the authors' distillation bounds
T_DEFAULT = 512   # distil_owt.sh: T = 512, K = 10k of 50k steps (5 rounds, train.py's default K = steps // 5)


FLAGS = {'curriculum': 'curriculum', 'curriculum_steps': 'curriculum', 'curriculum_tau': 'curriculum',
         'gamma': None, 'distill_from': 'distill_from', 'distill_every': 'distill_from', 'distill_T': 'distill_from',
         'distill_kl': 'distill_from'}   # train.py's few-step flags -> the flag each needs


def flag_problem(args):
    """A one-line problem with train.py's few-step flags (a Namespace, None = not given), or None."""
    given = [k for k in FLAGS if getattr(args, k) is not None]
    name = lambda k: '--' + k.replace('_', '-')
    if given and args.family != 'duo':
        return f"{name(given[0])} applies to --family duo only (spec §3.5, §3.6), not to --family {args.family}"
    if args.distill_from and args.fsdp:
        return "--distill-from does not support --fsdp yet (the teacher copies the whole student): use DDP"
    if args.curriculum and args.distill_from:
        return "--curriculum and --distill-from are two stages: train with --curriculum, then distil its checkpoint"
    for k in given:
        if FLAGS[k] and getattr(args, FLAGS[k]) is None:
            return f"{name(k)} needs {name(FLAGS[k])}" + (" CKPT" if FLAGS[k] == 'distill_from' else "")
    if args.gamma is not None and not (args.curriculum or args.distill_from):
        return "--gamma needs --curriculum or --distill-from CKPT"
    return None


def gap(step, every, T):
    """dt of round n = step // every: 2^n / T (the gap doubles each round)."""
    return 2 ** (step // every) / T


def sample_times(n, dt, T, strata=(0, 1), generator=None):
    """(t, s) (n,) float64: antithetic t (noise.sample_t), discretised to {1/T, ..., 1}, t <- min(t + dt, 1),
    s = t - dt."""
    t = noise.sample_t(n, *strata, generator=generator).double()
    t = torch.floor(t * T) / T + 1 / T
    t = (t + dt).clamp(0, 1)
    return t, t - dt


def coupled_latents(x0, t, s, V, gamma_range=GAMMA_RANGE, xi=None):
    """One shared xi (B, L, V) for both times -> (z_t, z_s (B, L) long, sigma_t, sigma_s (B,) float32)."""
    if xi is None:
        xi = torch.randn(*x0.shape, V, device=x0.device)                              # (B, L, V): ONE draw
    gamma_t, _, _, sigma_t = curriculum.schedule(t, V, gamma_range)
    gamma_s, _, _, sigma_s = curriculum.schedule(s, V, gamma_range)
    z_t = curriculum.latent(x0, gamma_t, V, xi).argmax(-1)                           # (B, L)
    z_s = curriculum.latent(x0, gamma_s, V, xi).argmax(-1)                           # (B, L)
    return z_t, z_s, sigma_t.to(x0.device), sigma_s.to(x0.device)


def kl(student_logits, teacher_logits, direction='bwd'):
    """Per-token KL (B, L) in fp32: 'bwd' = sum_j p_S (log p_S - log p_T) (the authors' kl-bwd), 'fwd' the reverse.
    The mask id has p = 0 in both (logit -1e6), so it adds exactly 0."""
    log_s = student_logits.float().log_softmax(-1)
    log_t = teacher_logits.float().log_softmax(-1)
    if direction == 'bwd':
        return (log_s.exp() * (log_s - log_t)).sum(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def loss(student, teacher, x0, dt, T=T_DEFAULT, strata=(0, 1), generator=None, direction='bwd',
         gamma_range=GAMMA_RANGE, xi=None):
    """One DCD loss: x0 (B, L) -> (sum over B L positions of the per-token KL, B L) (spec §3.6)."""
    B, L = x0.shape
    V = student.cfg.vocab_size
    t, s = sample_times(B, dt, T, strata, generator)
    z_t, z_s, sigma_t, sigma_s = coupled_latents(x0, t, s, V, gamma_range, xi)
    student_logits = student(z_t, sigma=sigma_t, attn='full')                           # (B, L, V), with gradient
    with torch.no_grad():
        teacher_logits = teacher(z_s, sigma=sigma_s, attn='full')                       # (B, L, V), frozen
    return kl(student_logits, teacher_logits, direction).sum(), B * L


def load_student(path, model, family, tokenizer, model_config, ckpt=None):
    """Check `--distill-from` and load its weights into `model` (the student). One-line ValueError otherwise.
    `ckpt`: what check_source already returned (train.py reads it once, before its data), else read here."""
    ckpt = ckpt or check_source(path, family, tokenizer)
    if ckpt['model_config'] != model_config:
        size = ckpt['args'].get('size', '?')
        raise ValueError(f"--distill-from {path} is a --size {size} model with seq_len "
                         f"{ckpt['model_config']['seq_len']}: pass the same --size and --seq-len "
                         f"({ckpt['model_config']} != {model_config})")
    checkpoint.load_weights(model, ckpt, path)
    return ckpt


def check_source(path, family, tokenizer):
    """`--distill-from`: a Duo checkpoint with this run's tokenizer (one-line ValueError otherwise) -> the checkpoint.
    train.py calls it once before it prepares any data, so that a mismatch is not found after a long tokenization."""
    ckpt = checkpoint.read_checkpoint(path)
    if family != 'duo':
        raise ValueError(f"--distill-from distils a Duo model: pass --family duo (not {family})")
    if ckpt['family'] != 'duo':
        raise ValueError(f"--distill-from {path} is a {ckpt['family']} checkpoint: DCD distils a Duo model (train "
                         f"one with --family duo)")
    if ckpt['tokenizer'] != tokenizer:
        raise ValueError(f"--distill-from {path} uses the {ckpt['tokenizer']} tokenizer but this run --tokenizer "
                         f"{tokenizer}: pass --tokenizer {ckpt['tokenizer']}")
    return ckpt


class Distiller:
    """train.py's objective for `--distill-from`: the frozen teacher, its refreshes, the round in checkpoints."""

    def __init__(self, student, out_dir, every, T=T_DEFAULT, direction='bwd', gamma_range=None, master=True,
                 meta=None):
        self.student, self.out_dir, self.every, self.T = student, out_dir, every, T
        self.direction = direction
        self.gamma_range = tuple(gamma_range or curriculum.matched_gamma_range(student.cfg.vocab_size, GAMMA_RANGE))
        self.master, self.meta = master, meta or {}   # meta: make_checkpoint's (cfg, args, tokenizer) for the files
        self.teacher = type(student)(student.cfg).to(next(student.parameters()).device).eval()
        self.teacher.requires_grad_(False)             # not in the optimizer, never updated by a backward
        self.teacher_step = None

    def describe(self, max_steps):
        rounds = -(-max_steps // self.every)
        return (f"DCD (spec §3.6): {rounds} round(s) of {self.every} steps, dt = 2^round / {self.T} "
                f"(from 1/{self.T} to {gap(max_steps - 1, self.every, self.T):g}), kl-{self.direction}, gamma in "
                f"[{self.gamma_range[0]:g}, {self.gamma_range[1]:g}]; teachers in {self.teacher_path('N')}")

    def teacher_path(self, n):
        return os.path.join(self.out_dir, f'teacher-round{n}.pt')

    def refresh(self, step):
        """teacher <- student (step % K == 0), and rank 0 writes it to teacher-round{n}.pt (atomically)."""
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher_step = step
        if self.master and self.meta:
            cfg, args, tokenizer = self.meta['cfg'], self.meta['args'], self.meta['tokenizer']
            checkpoint.save_checkpoint(self.teacher_path(step // self.every), checkpoint.make_checkpoint(
                {k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}, cfg, args, 'duo', {},
                tokenizer, step=step, distill=dict(round=step // self.every, every=self.every, T=self.T)))

    def resume(self, step):
        """A run resumed at `step`: mid-round, the teacher of this round comes back from its file."""
        if step % self.every == 0:
            return                                     # loss_at(step) refreshes it from the resumed student
        path = self.teacher_path(step // self.every)
        ckpt = checkpoint.read_checkpoint(path)        # one-line CheckpointError if it is missing or damaged
        if ckpt.get('step') != step // self.every * self.every:
            raise ValueError(f"--resume: {path} holds the teacher of step {ckpt.get('step')}, not of step "
                             f"{step // self.every * self.every}: the out-dir was edited; restart with --overwrite")
        checkpoint.load_weights(self.teacher, ckpt, path)
        self.teacher_step = ckpt['step']

    def loss_at(self, step):
        if step % self.every == 0 and self.teacher_step != step:
            self.refresh(step)
        dt = gap(step, self.every, self.T)

        def step_loss(model, x0, train=True, strata=(0, 1), generator=None, given=None):
            if given is not None:
                raise ValueError("DCD distils the unconditional model: conditional distillation is not implemented")
            return loss(model, self.teacher, x0, dt, self.T, strata, generator, self.direction, self.gamma_range)
        return step_loss

    def state(self, step):
        """What a checkpoint at `step` says about the distillation: its round and the settings."""
        return dict(distill=dict(round=step // self.every, every=self.every, T=self.T, dt=gap(step, self.every,
                                                                                          self.T)))
