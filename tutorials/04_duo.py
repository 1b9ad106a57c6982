"""Lesson 04: Duo, uniform-state diffusion: the uniform process, the closed-form NELBO term by term, the exact posterior.

    python tutorials/04_duo.py                           # ~1 min on a laptop CPU: trains a small Duo model first
    python tutorials/04_duo.py --ckpt out_duo/ckpt.pt    # or use a `train.py --family duo` checkpoint
    python tutorials/04_duo.py --quick                   # seconds (the tests)

First, on a 5-token vocabulary, computes the NELBO of one position term by term from the equations, compares it with
nanodllm's closed form and with the KL rate of two posteriors (a finite difference), and checks the posterior
against Bayes' rule. Then trains Duo on Shakespeare bytes and records one denoising trajectory -> 04_duo_trajectory.png.
"""
import math

import lesson_utils as lu
import torch

from nanodllm import duo, noise


def nelbo_by_hand(p, x, z, alpha, dalpha):
    """The Duo NELBO of one position, written out from the equations (p: (V,) float64, x, z: ints) -> dict of terms."""
    V = p.numel()
    xbar_theta = V * alpha * p + (1 - alpha)                         # (V,) the model's "xbar"
    xbar_z = (1 - alpha) + V * alpha * (x == z)                      # = V q(z | x)
    A = xbar_theta.log().sum() - V * xbar_theta[z].log()
    c = (1 - alpha) / (V * alpha + 1 - alpha)
    T1 = V * (1 / xbar_z - 1 / xbar_theta[z])
    if x == z:
        T2 = -c * A + (V - 1) * c * math.log(c)
    else:
        T2 = -A - V * alpha / (1 - alpha) * (xbar_theta[x].log() - xbar_theta[z].log()) - math.log(c) / c
    return dict(A=A.item(), c=c, T1=T1.item(), T2=T2.item(), loss=(dalpha / (V * alpha) * (T1 - T2)).item())


def main(argv=None):
    args = lu.parser(__doc__, ckpt='one').parse_args(argv)

    # 1) one position, V = 5 (id 4 plays the mask: the model never predicts it), t = 0.4
    V, x, t = 5, 2, 0.4
    alpha, dalpha = noise.alpha(t), noise.dalpha(t)
    p = torch.tensor([0.1, 0.15, 0.6, 0.15, 0.0], dtype=torch.float64)     # a decent guess of x = 2
    print(f"V = {V}, x0 = {x}, t = {t}: alpha_t = {alpha:.4f}, alpha'_t = {dalpha:.4f}, p = {p.tolist()}")
    for z in (2, 0):
        terms = nelbo_by_hand(p, x, z, alpha, dalpha)
        closed = duo.nelbo_per_token(p.log()[None, None], torch.tensor([[x]]), torch.tensor([[z]]), alpha, dalpha)
        # the NELBO is the rate at which KL(true posterior || model posterior) grows as s moves below t
        delta = 1e-6
        alpha_s = noise.alpha(t - delta)
        q_true = duo.posterior(torch.nn.functional.one_hot(torch.tensor(x), V).double(), torch.tensor(z), alpha,
                               alpha_s)
        q_model = duo.posterior(p, torch.tensor(z), alpha, alpha_s)
        kl_rate = (q_true * (q_true.clamp_min(1e-300).log() - q_model.log())).sum().item() / delta
        print(f"  z = {z} ({'clean' if z == x else 'noisy'}): A = {terms['A']:.4f}, c = {terms['c']:.4f}, "
              f"T1 = {terms['T1']:.4f}, T2 = {terms['T2']:.4f} -> loss {terms['loss']:.6f} | "
              f"nelbo_per_token {closed.item():.6f} | KL rate {kl_rate:.6f}")
    perfect = duo.nelbo_per_token(torch.nn.functional.one_hot(torch.tensor(x), V).double().clamp_min(1e-300).log()
                                  [None, None], torch.tensor([[x]]), torch.tensor([[0]]), alpha, dalpha)
    print(f"  a perfect prediction p = onehot(x0) costs {perfect.item() + 0.0:.1e} (the NELBO is a KL rate: >= 0)")

    # 2) the posterior with p = onehot(x0) is Bayes' rule q(z_s | z_t, x0) ∝ q(z_t | z_s) q(z_s | x0)
    alpha_s = noise.alpha(0.25)
    worst = 0.0
    for z in range(V):
        onehot_x = torch.nn.functional.one_hot(torch.tensor(x), V).double()
        q_zs_given_x = alpha_s * onehot_x + (1 - alpha_s) / V                            # (V,) over z_s
        a_ts = alpha / alpha_s                                                          # alpha_{t|s}
        q_zt_given_zs = a_ts * (torch.arange(V) == z).double() + (1 - a_ts) / V         # (V,) over z_s
        bayes = q_zt_given_zs * q_zs_given_x / (q_zt_given_zs * q_zs_given_x).sum()
        worst = max(worst, (duo.posterior(onehot_x, torch.tensor(z), alpha, alpha_s) - bayes).abs().max().item())
    print(f"posterior(onehot(x0)) vs Bayes' rule, every z_t, t = {t} -> s = 0.25: max difference {worst:.1e}")

    # 3) a trained model, one trajectory from uniform noise to text
    if args.ckpt:
        model, _, _, text = lu.load(args.ckpt, 'duo')
    else:
        text = lu.Text()
        steps = args.train_steps or (10 if args.quick else 1000)
        model, _ = lu.train('duo', text, steps=steps, seed=args.seed, log_every=0 if args.quick else 200)
    print(f"validation NELBO {lu.val_loss('duo', model, text, batches=2 if args.quick else 8):.3f} nats/token")
    L = min(model.cfg.seq_len, 64)
    x0 = text.val_batch(1, L)
    torch.manual_seed(args.seed)
    for t_show in (0.25, 0.5, 0.75):
        zt = duo.corrupt(x0, torch.tensor([[noise.alpha(t_show)]]), model.cfg.vocab_size)
        print(f"  forward process at t = {t_show}: {text.show(zt[0], width=L)}")

    n_steps = 8 if args.quick else 32
    states = []
    xs, nfe = duo.sample(model, 1, L, steps=n_steps, generator=torch.Generator().manual_seed(args.seed),
                         callback=lambda s: states.append(s[0].clone()))
    final = xs[0]
    states = [None] + states                       # states[k] = the sequence after network call k
    changed = [(b != a).float().mean().item() for a, b in zip(states[1:-1], states[2:])]
    same = [(s == final).float().mean().item() for s in states[1:]]
    print(f"{nfe} network calls; share of positions that change at each step: "
          + ' '.join(f"{c:.2f}" for c in changed))

    show = sorted(set([1, 2, 4] + list(range(8, n_steps + 1, max(1, n_steps // 6))) + [n_steps, n_steps + 1]))
    fig, (ax, ax2) = lu.plt.subplots(2, 1, figsize=(11, 0.36 * len(show) + 3.4),
                                     gridspec_kw=dict(height_ratios=[len(show), 6]))
    for row, k in enumerate(show):
        label = f'after call {k}' + (' (noise removal)' if k == n_steps + 1 else '')
        ax.text(-1, row, label, ha='right', va='center', fontsize=8, family='monospace')
        for i, ch in enumerate(text.cells(states[k])):
            ok = states[k][i] == final[i]
            ax.text(i, row, ch, ha='center', va='center', fontsize=8, family='monospace',
                    color='black' if ok else 'crimson')
    ax.set_xlim(-14, L)
    ax.set_ylim(len(show) - 0.5, -0.5)
    ax.axis('off')
    ax.set_title(f'Duo: one trajectory from uniform noise, {n_steps} steps + noise removal '
                 f'(red: differs from the final sample)', fontsize=10)
    ax2.plot(range(1, len(same) + 1), same, 'o-', ms=3, label='positions equal to the final sample')
    ax2.plot(range(2, len(changed) + 2), changed, 's-', ms=3, label='positions changed by this call')
    ax2.set_xlabel('network call')
    ax2.set_ylabel('fraction of positions')
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    lu.savefig(fig, args, '04_duo_trajectory.png')


if __name__ == '__main__':
    main()
