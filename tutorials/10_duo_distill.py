"""Lesson 10: Duo in few steps: the Gaussian-to-discrete map, the Gumbel-softmax curriculum, consistency distillation.

    python tutorials/10_duo_distill.py                          # ~3 min on a laptop CPU: trains Duo, a judge, 4 rounds
    python tutorials/10_duo_distill.py --ckpt out_duo/ckpt.pt   # distil your `train.py --family duo` checkpoint
    python tutorials/10_duo_distill.py --quick                  # seconds (the tests)

1) The Diffusion Transformation operator: I(gamma) = P(argmax(nu e_x + xi) = x) by quadrature against Monte Carlo,
   and T(gamma) for three vocabularies -> 10_operator.png.
2) The curriculum: how sharp the soft input softmax(w / tau) is along the tau schedule -> 10_curriculum.png.
3) The deterministic coupling: one xi, the whole trajectory z_t, t from 1 to 0 (a token that is clean stays clean).
4) DCD rounds on a small Duo model (nanodllm/distill.py:loss), with gen PPL against sampling steps after each round,
   both tails, under an AR judge trained here -> 10_rounds.png.
"""
import copy
import math

import lesson_utils as lu
import torch

from nanodllm import curriculum, distill, duo, quality


class Judge:
    """A nanodllm AR model as a judge for nanodllm/quality.py:judge_nll (the interface of its ARJudge)."""

    def __init__(self, model, text):
        self.model, self.text, self.name = model, text, 'the AR model trained here'
        self.context, self.bos = model.cfg.seq_len, text.tokenizer.bos

    def encode(self, s):
        return self.text.tokenizer.encode(s)

    @torch.no_grad()
    def logits(self, x, valid):
        return self.model(x, attn='causal')


def sample_quality(model, judge, text, steps, tail, n, L, seed):
    """gen PPL and entropy of n Duo samples of L tokens at `steps` steps with the `tail` noise removal."""
    x, _ = duo.sample(model, n, L, steps=steps, noise_removal=tail, generator=torch.Generator().manual_seed(seed))
    texts = [text.tokenizer.decode(row.tolist(), mask_id=model.cfg.mask_id) for row in x]
    nll, count = quality.judge_nll(judge, texts)
    return math.exp(nll / count), quality.unigram_entropy(x)


def main(argv=None):
    p = lu.parser(__doc__, ckpt='one')
    p.add_argument('--rounds', type=int, default=None, help='DCD rounds (default 4, quick 2)')
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    # 1) the operator: I(gamma) by quadrature vs Monte Carlo, T(gamma) for V = 11, 257, 50258
    V = 257
    print("I(gamma) = P(argmax(nu e_x + xi) = x), nu = exp(-gamma / 2), V = 257: quadrature vs Monte Carlo")
    n_mc = 20_000 if args.quick else 200_000
    for gamma in (-4.0, -3.0, -2.0, -1.0):
        I = curriculum.integral(torch.tensor(gamma), V)[0].item()
        xi = torch.randn(n_mc, V, dtype=torch.float64)
        xi[:, 0] += math.exp(-gamma / 2)
        mc = (xi.argmax(-1) == 0).double().mean().item()
        print(f"  gamma {gamma:5.1f}: quadrature {I:.5f}, Monte Carlo {mc:.5f} +- {math.sqrt(I * (1 - I) / n_mc):.5f}"
              f" -> alpha = T(gamma) = {curriculum.transform(torch.tensor(I), V).item():.5f}")
    fig, ax = lu.plt.subplots(figsize=(6.4, 3.8))
    for Vs in (11, 257, 50258):
        grid, I, _ = curriculum.table(Vs, -7.0, 3.0, n=501)
        ax.plot(grid, curriculum.transform(I, Vs), label=f'V = {Vs}')
    ax.axvspan(*curriculum.GAMMA_RANGE, color='tab:orange', alpha=0.15, label='curriculum gamma range')
    ax.axvspan(*distill.GAMMA_RANGE, color='tab:green', alpha=0.08, label='DCD gamma range')
    ax.set_xlabel('gamma (log-SNR: SNR = exp(-gamma))')
    ax.set_ylabel('Duo alpha = T(gamma)')
    ax.set_title('The Diffusion Transformation operator: Gaussian noise level -> Duo alpha')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lu.savefig(fig, args, '10_operator.png')

    # 2) the curriculum: the soft input softmax(w / tau) along the schedule
    x0 = torch.randint(0, V - 1, (64, 32))
    start, end = 100, 200                                           # 10% and 20% of a 1000-step run
    run_steps = list(range(0, 260, 5))
    fig, (ax1, ax2) = lu.plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.plot(run_steps, [math.log10(1 / curriculum.tau_inverse(s, start, end)) if s < end else -2.2
                         for s in run_steps])
    ax1.set_xlabel('training step (a 1000-step run)')
    ax1.set_ylabel('log10 tau')
    ax1.set_title('tau: -1, then -> -2; one-hot at the end, then the discrete loss', fontsize=9)
    ax1.grid(alpha=0.3)
    for gamma in (-3.5, -2.6, -1.75):
        w = curriculum.latent(x0, torch.full((64,), gamma, dtype=torch.float64), V)
        sharp = [(w * 10 ** -lt).softmax(-1).max(-1).values.mean().item() for lt in (0, -0.5, -1, -1.5, -2, -3)]
        ax2.plot([0, -0.5, -1, -1.5, -2, -3], sharp, 'o-', label=f'gamma {gamma}')
        print(f"soft input at gamma {gamma}: mean top probability {sharp[2]:.3f} at tau 0.1, {sharp[4]:.3f} at 0.01")
    ax2.set_xlabel('log10 tau')
    ax2.set_ylabel('mean top probability of softmax(w / tau)')
    ax2.set_title('the soft input the network sees (the loss scores argmax w)', fontsize=9)
    ax2.invert_xaxis()
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    lu.savefig(fig, args, '10_curriculum.png')

    # 3) the coupling: one xi, t from 1 to 0
    x0 = torch.randint(0, V - 1, (256, 32))
    xi = torch.randn(256, 32, V)
    ts = torch.linspace(1, 0, 11, dtype=torch.float64)
    zs = [distill.coupled_latents(x0, t.expand(256), t.expand(256), V, xi=xi)[0] for t in ts]
    clean = [(z == x0).double().mean().item() for z in zs]
    monotone = all(((b == a) | (b == x0)).all() for a, b in zip(zs, zs[1:]))
    print("one shared xi, t = 1 -> 0: share of clean tokens " + ' '.join(f"{c:.2f}" for c in clean)
          + f"; each step keeps a token or makes it clean: {monotone}")

    # 4) a base Duo model, a judge, then DCD rounds
    if args.ckpt:
        base, _, _, text = lu.load(args.ckpt, 'duo')
    else:
        text = lu.Text()
        base, _ = lu.train('duo', text, steps=args.train_steps or (10 if args.quick else 1500), seed=args.seed,
                           log_every=0 if args.quick else 500)
    judge_model, _ = lu.train('ar', text, seq_len=base.cfg.seq_len, steps=10 if args.quick else 800,
                              seed=args.seed + 1, log_every=0)
    judge = Judge(judge_model, text)
    rounds = args.rounds or (2 if args.quick else 4)
    K, T = (3 if args.quick else 150), 32                           # round n trains the jump dt = 2^n / 32
    steps_list = [2, 4] if args.quick else [2, 4, 8, 16, 32]
    n, L = (4 if args.quick else 64), base.cfg.seq_len
    student = copy.deepcopy(base).train()
    opt = torch.optim.AdamW(student.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    results = {}

    def measure(r, model):
        model.eval()
        for tail in ('ancestral', 'greedy'):
            results[(r, tail)] = [sample_quality(model, judge, text, s, tail, n, L, args.seed) for s in steps_list]
        print(f"  after {r} round(s): gen PPL (entropy) at steps {steps_list}: ancestral "
              + ' '.join(f"{q[0]:.1f} ({q[1]:.2f})" for q in results[(r, 'ancestral')]) + " | greedy "
              + ' '.join(f"{q[0]:.1f} ({q[1]:.2f})" for q in results[(r, 'greedy')]))
        model.train()

    measure(0, student)
    base256, base_entropy = sample_quality(base.eval(), judge, text, 8 if args.quick else 256, 'ancestral', n, L,
                                           args.seed)
    print(f"  the base model at {8 if args.quick else 256} steps: gen PPL {base256:.1f} (entropy {base_entropy:.2f}); "
          f"real text: entropy {quality.unigram_entropy(text.val_batch(n, L)):.2f}")
    g = torch.Generator().manual_seed(args.seed)
    for r in range(rounds):
        teacher = copy.deepcopy(student).eval().requires_grad_(False)   # the refresh: teacher <- student
        dt = distill.gap(r * K, K, T)
        for k in range(K):
            x0 = text.batch(16, L, generator=g)
            nll, cnt = distill.loss(student, teacher, x0, dt, T, generator=torch.Generator().manual_seed(r * K + k))
            opt.zero_grad(set_to_none=True)
            (nll / cnt).backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
        print(f"round {r}: dt = {dt:.4f} (the student on z_t learns the teacher on z_(t - dt)), "
              f"last KL {nll.item() / cnt:.4f}")
        measure(r + 1, student)

    fig, axes = lu.plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, tail in zip(axes, ('ancestral', 'greedy')):
        for r in range(rounds + 1):
            ax.plot(steps_list, [q[0] for q in results[(r, tail)]], 'o-', color=lu.plt.get_cmap('viridis')(r / rounds),
                    label='base' if r == 0 else f'after round {r}')
        ax.axhline(base256, color='gray', ls=':', label=f'base, {8 if args.quick else 256} steps')
        ax.set_xscale('log', base=2)
        ax.set_xticks(steps_list, [str(s) for s in steps_list])
        ax.set_xlabel('sampling steps')
        ax.set_title(f'{tail} tail' if tail == 'greedy' else 'ancestral', fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('gen PPL (AR judge trained here)')
    axes[1].legend(fontsize=8)
    fig.suptitle('DCD: gen PPL against sampling steps after each round (nano model, Shakespeare bytes)')
    lu.savefig(fig, args, '10_rounds.png')


if __name__ == '__main__':
    main()
