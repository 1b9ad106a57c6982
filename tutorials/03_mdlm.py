"""Lesson 03: MDLM, masked diffusion: the absorbing process, the NELBO, carry-over, and the low-variance objective.

    python tutorials/03_mdlm.py                            # ~1 min on a laptop CPU: trains a small MDLM first
    python tutorials/03_mdlm.py --ckpt out_mdlm/ckpt.pt    # or use a `train.py --family mdlm` checkpoint
    python tutorials/03_mdlm.py --quick                    # seconds (the tests)

Two measurements on a model trained with the low-variance loss:
- the per-token loss against t under both weights (the NELBO's 1/t and the low-var CE's 1) -> 03_loss_vs_t.png;
- the gradient noise of both objectives, measured on the same batches, masks and t at several points of training
  (trace of the gradient covariance over the squared mean gradient) -> 03_grad_variance.png.
"""
import lesson_utils as lu
import numpy as np
import torch

from nanodllm import mdlm, noise


def flat_grad(loss, model):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def batch_gradients(model, batches):
    """Gradients of the low-var and the NELBO training loss on the same batches, t and masks -> two (K, P) tensors.
    Calls mdlm.loss exactly as training does; the global RNG (the masks) is re-seeded identically for both."""
    grads = {'low_var': [], 'elbo': []}
    for seed, x0 in batches:
        for loss_type in grads:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                nll, n = mdlm.loss(model, x0, train=True, generator=torch.Generator().manual_seed(seed),
                                   loss_type=loss_type)
            grads[loss_type].append(flat_grad(nll / n, model))
    return {k: torch.stack(v) for k, v in grads.items()}


def noise_to_signal(g):
    """g (K, P) gradient draws -> trace(Cov) / |mean|^2: how noisy one batch gradient is, whatever its scale
    (Adam divides the scale out, so the scale of the two objectives does not matter, their noise does)."""
    mean = g.mean(0)
    return ((g - mean) ** 2).sum(1).mean().item() / (mean ** 2).sum().item()


def main(argv=None):
    args = lu.parser(__doc__, ckpt='one').parse_args(argv)
    B_grad, K = (8, 6) if args.quick else (16, 48)      # batch size and number of batches of the gradient study
    probes = {}                                         # training step -> (low-var, NELBO) noise-to-signal

    text = lu.Text() if not args.ckpt else None
    if args.ckpt:
        model, _, _, text = lu.load(args.ckpt, 'mdlm')
    L = model.cfg.seq_len if args.ckpt else 64
    g = torch.Generator().manual_seed(args.seed + 99)
    batches = [(1000 + k, text.batch(B_grad, L, split='val', generator=g)) for k in range(K)]

    def probe(step, m):
        if step in probe_steps:
            m.eval()  # no dropout in this backbone: eval/train only matters for bookkeeping
            grads = batch_gradients(m, batches)
            probes[step] = (noise_to_signal(grads['low_var']), noise_to_signal(grads['elbo']))
            print(f"  step {step}: gradient noise-to-signal low-var {probes[step][0]:.2f}, NELBO {probes[step][1]:.2f}"
                  f" (ratio {probes[step][1] / probes[step][0]:.2f})")
            m.train()

    if args.ckpt:
        probe_steps = {0}
        probe(0, model)
    else:
        steps = args.train_steps or (10 if args.quick else 1000)
        probe_steps = {steps // 10, steps // 4, steps // 2, steps} if not args.quick else {5, 10}
        model, losses = lu.train('mdlm', text, steps=steps, seed=args.seed, callback=probe,
                                 log_every=0 if args.quick else 200)
    mask_id = model.cfg.mask_id

    # 1) the per-token loss against t: the same masked cross-entropies, weighted by 1/t (NELBO) or by 1 (low-var)
    n_seq = 8 if args.quick else 64
    x0 = text.val_batch(n_seq, L)
    ts = np.concatenate([[0.002, 0.005, 0.01, 0.02, 0.05], np.linspace(0.1, 1.0, 4 if args.quick else 19)])
    rows = []
    torch.manual_seed(args.seed)
    with torch.no_grad():
        for t in ts:
            t_vec = torch.full((n_seq,), float(t))
            low_var, xt = mdlm.nll_per_token(model, x0, t_vec, elbo=False)          # (n, L): 0 where unmasked
            low_var = low_var.mean(1)                                                 # (n,) per token, / all L
            nelbo = low_var * mdlm.nelbo_weight(t_vec)                                # (n,) times 1/t
            rows.append((t, low_var.mean().item(), low_var.std().item(), nelbo.mean().item(), nelbo.std().item(),
                         (xt == mask_id).float().mean().item(), *low_var.quantile(torch.tensor([0.1, 0.9])).tolist(),
                         *nelbo.quantile(torch.tensor([0.1, 0.9])).tolist()))
    print(" t      masked  low-var (mean ± sd over sequences)   NELBO (mean ± sd over sequences)")
    for t, lm, ls, nm, ns, frac, *_ in rows:
        print(f" {t:<6.3f} {frac:5.2f}   {lm:6.3f} ± {ls:6.3f}                       {nm:6.3f} ± {ns:6.3f}")
    val_nelbo = lu.val_loss('mdlm', model, text, batches=2 if args.quick else 8)
    print(f"validation NELBO (t ~ U[1e-3, 1], the area under the NELBO curve): {val_nelbo:.3f} nats/token")

    t_, lm, ls, nm, ns, _, l10, l90, n10, n90 = map(np.array, zip(*rows))
    fig, ax = lu.plt.subplots(figsize=(6.4, 4))
    ax.plot(t_, nm, 'o-', ms=3, color='crimson', label='NELBO: weight 1/t (evaluation, loss_type=elbo)')
    ax.fill_between(t_, n10, n90, color='crimson', alpha=0.15)
    ax.plot(t_, lm, 's-', ms=3, color='navy', label='low-var CE: weight 1 (training, loss_type=low_var)')
    ax.fill_between(t_, l10, l90, color='navy', alpha=0.15)
    ax.set_xlabel('t  (fraction of tokens masked ≈ t)')
    ax.set_ylabel('loss per token (nats): mean, 10-90% of sequences')
    ax.set_title(f'MDLM: the same masked CE under both weights\n(validation NELBO = mean over t = {val_nelbo:.2f})',
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lu.savefig(fig, args, '03_loss_vs_t.png')

    # 2) where the NELBO's noise comes from: one sequence's gradient at its t, under both weights
    n_single = 8 if args.quick else 48
    t_single = torch.logspace(-3, 0, n_single)                                     # from 1e-3 to 1, log-spaced
    norms = []
    torch.manual_seed(args.seed)
    for i in range(n_single):
        nll, xt = mdlm.nll_per_token(model, x0[i % n_seq:i % n_seq + 1], t_single[i:i + 1], elbo=False)
        grad_norm = flat_grad(nll.mean(), model).norm().item() if (xt == mask_id).any() else 0.0
        norms.append((t_single[i].item(), grad_norm, grad_norm / t_single[i].item()))  # NELBO gradient = low-var / t

    steps_seen = sorted(probes)
    fig, axes = lu.plt.subplots(1, 2, figsize=(11.5, 4))
    hit = [(t, a, b) for t, a, b in norms if a > 0]
    ts1, lv1, el1 = zip(*hit)
    axes[0].scatter(ts1, el1, s=14, color='crimson', label='NELBO (= low-var / t)')
    axes[0].scatter(ts1, lv1, s=14, color='navy', label='low-var')
    empty = [t for t, a, _ in norms if a == 0]
    if empty:  # no token masked at all: both gradients are exactly 0
        axes[0].scatter(empty, [min(lv1) / 3] * len(empty), marker='x', color='gray',
                        label=f'no masked token: gradient 0 ({len(empty)} sequences)')
    axes[0].set_xscale('log')
    axes[0].set_yscale('log')
    axes[0].set_xlabel('t of the sequence (one sequence per t)')
    axes[0].set_ylabel('|gradient| of one sequence')
    axes[0].set_title('One sequence, one t: the 1/t weight amplifies\nthe rare small-t draws that hit a mask',
                      fontsize=10)
    axes[0].legend(fontsize=8)
    lv, el = zip(*(probes[s] for s in steps_seen))
    axes[1].plot(steps_seen, el, 'o-', color='crimson', label='NELBO objective')
    axes[1].plot(steps_seen, lv, 's-', color='navy', label='low-var objective')
    for s, a, b in zip(steps_seen, lv, el):
        axes[1].annotate(f"×{b / a:.1f}", (s, b), textcoords='offset points', xytext=(0, 6), ha='center', fontsize=8)
    axes[1].set_yscale('log')
    axes[1].set_xlabel('training step (low-var training)' if not args.ckpt else 'the checkpoint')
    axes[1].set_ylabel('trace(Cov) / |mean|²  of a batch gradient')
    axes[1].set_title(f'Measured gradient noise, {K} batches of {B_grad}×{L},\nsame t and masks for both objectives',
                      fontsize=10)
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    lu.savefig(fig, args, '03_grad_variance.png')


if __name__ == '__main__':
    main()
