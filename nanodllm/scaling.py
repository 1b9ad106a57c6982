"""Iso-FLOP scaling analysis for sweep.py: fits, compute multipliers, plots and report.md (spec paper.md §1.2-1.4).

Input: one row per finished run, dict(family, budget C, params N = non-embedding parameters, loss = validation loss).
- `fit_isoflop`: per (family, budget), a parabola of loss in log10 N -> the compute-optimal N*, L*; a minimum the
  grid does not bracket (vertex outside the sizes, or a parabola that opens downwards) is reported, not used.
- `fit_power_law`: across budgets, N* = k C^a and L* = k C^b (pure power laws, straight lines in log-log; with
  3-5 budgets there is too little to also fit an irreducible loss E as in L = E + k C^b).
- D*: the tokens a model of size N* trains on at budget C. The paper's D* = C / (6 N*) assumes F = 2N forward FLOPs
  per token; tiny models are far from that (their time-conditioning layers are parameters that cost no per-token
  FLOPs: atto has F/2N = 0.18), so when the rows carry each run's `tokens` (C / 3F), D* is read off them
  (log-log interpolation at N*) instead.
- `multiplier`: the compute a reference family's L*(C) law needs to reach a family's L* at budget C, as a ratio:
  m = C / C_ref with L*_ref(C_ref) = L*(C). The paper's convention (MDLM needs ~14x AR's compute: m = 14).
All fits are numpy.polyfit on log10 axes; nothing here solves anything by hand.
"""
import math
from collections import defaultdict

import numpy as np

# The paper's numbers, with the source tags of paper.md: [F] read off the published figure, [D] derived from those
# readings (rough fits, not the paper's own), [S] secondary sources quoting the paper.
PAPER = {
    'exponent_n': ({'ar': 0.58, 'mdlm': 0.48, 'duo': 0.64, 'eso': 0.49}, '[D] paper.md §1.3'),
    'exponent_loss': ({'ar': -0.068, 'mdlm': -0.062, 'duo': -0.067, 'eso': -0.064}, '[D] paper.md §1.3'),
    'multiplier': ({'mdlm': 14, 'mdlm-elbo': 16, 'duo': 23, 'eso': 32}, '[S] paper.md §1.4'),
    'multiplier_figure': ({'mdlm': 15, 'duo': 27, 'eso': 38}, '[D] paper.md §1.3, at 1e20'),
    'tokens_per_param': ({'ar': 14, 'mdlm': 75, 'duo': 59, 'eso': 67}, '[D] paper.md §1.3, at 1e20'),
    'lowvar_vs_elbo': (16 / 14, '[S] paper.md §1.4: 16x -> 14x, "~12% more FLOPs-efficient"'),
    # budget -> family -> (N*, L*) read off Fig. scaling.png, SlimPajama, Llama-2 tokens, L = 2048
    'optima': ({6e18: {'ar': (215e6, 2.855), 'mdlm': (120e6, 3.375), 'duo': (90e6, 3.545), 'eso': (120e6, 3.60)},
                1e19: {'ar': (290e6, 2.75), 'mdlm': (150e6, 3.245), 'duo': (130e6, 3.42), 'eso': (175e6, 3.47)},
                3e19: {'ar': (520e6, 2.545), 'mdlm': (250e6, 3.04), 'duo': (280e6, 3.165), 'eso': (290e6, 3.23)},
                6e19: {'ar': (850e6, 2.43), 'mdlm': (340e6, 2.92), 'duo': (400e6, 3.03), 'eso': (400e6, 3.09)},
                1e20: {'ar': (1.1e9, 2.365), 'mdlm': (470e6, 2.825), 'duo': (530e6, 2.94), 'eso': (500e6, 3.01)}},
               '[F] paper.md §1.3'),
}


# -----------------------------------------------------------------------------
# fits

def fit_isoflop(params, losses):
    """One iso-FLOP curve: loss = c2 x^2 + c1 x + c0 with x = log10 N (numpy.polyfit, degree 2).
    -> dict(bracketed, n_opt, loss_opt, coeffs, reason); n_opt/loss_opt are None unless bracketed."""
    x, y = np.log10(np.asarray(params, dtype=float)), np.asarray(losses, dtype=float)
    out = dict(bracketed=False, n_opt=None, loss_opt=None, coeffs=None, reason=None,
               n_range=(float(10 ** x.min()), float(10 ** x.max())) if len(x) else None)
    if len(np.unique(x)) < 3:
        out['reason'] = f"{len(np.unique(x))} size(s) finished: a parabola needs 3"
        return out
    c2, c1, c0 = np.polyfit(x, y, 2)
    out['coeffs'] = (float(c2), float(c1), float(c0))
    if c2 <= 0:
        out['reason'] = "the parabola opens downwards: no minimum (the loss is not U-shaped over these sizes)"
        return out
    x_opt = -c1 / (2 * c2)
    if not x.min() <= x_opt <= x.max():
        side = 'smaller' if x_opt < x.min() else 'larger'
        out['reason'] = (f"the fitted minimum N = {10 ** x_opt:.3g} lies outside the sizes "
                         f"[{10 ** x.min():.3g}, {10 ** x.max():.3g}]: add {side} sizes")
        return out
    out.update(bracketed=True, n_opt=float(10 ** x_opt), loss_opt=float(np.polyval((c2, c1, c0), x_opt)))
    return out


def fit_power_law(x, y):
    """y = k x^exponent by a straight line in log10-log10 (numpy.polyfit, degree 1) -> dict(exponent, k) or None."""
    if len(x) < 2:
        return None
    exponent, log_k = np.polyfit(np.log10(np.asarray(x, dtype=float)), np.log10(np.asarray(y, dtype=float)), 1)
    return dict(exponent=float(exponent), k=float(10 ** log_k))


def power_law(law, x):
    return law['k'] * np.asarray(x, dtype=float) ** law['exponent']


def compute_for_loss(law, loss):
    """Invert L*(C) = k C^b: the compute at which the law reaches `loss`."""
    return (loss / law['k']) ** (1 / law['exponent'])


def multiplier(budget, loss, reference_law):
    """m = C / C_ref: how many times the reference family's compute this family spent to reach `loss`."""
    return budget / compute_for_loss(reference_law, loss)


def analyse(rows, reference='ar', pair=('mdlm', 'mdlm-elbo')):
    """rows: dicts with family, budget, params, loss and optionally tokens (finished runs only).
    -> dict(curves={(family, budget): fit + points}, laws={family: dict(n=law, loss=law, budgets=[...])},
            multipliers={family: [(budget, m, extrapolated)]}, pair={...} or None)."""
    points, tokens = defaultdict(list), defaultdict(list)
    for r in rows:
        points[r['family'], r['budget']].append((r['params'], r['loss']))
        if r.get('tokens'):
            tokens[r['family'], r['budget']].append((r['params'], r['tokens']))
    curves = {}
    for (family, budget), pts in sorted(points.items()):
        pts = sorted(pts)
        c = curves[family, budget] = dict(fit_isoflop([p for p, _ in pts], [l for _, l in pts]), points=pts)
        if c['bracketed']:
            tok = sorted(tokens[family, budget])
            c['d_opt'] = (float(10 ** np.interp(np.log10(c['n_opt']), *np.log10(tok).T)) if len(tok) == len(pts)
                          else budget / (6 * c['n_opt']))
    laws = {}
    for family in sorted({f for f, _ in curves}):
        opt = sorted((b, c['n_opt'], c['loss_opt']) for (f, b), c in curves.items() if f == family and c['bracketed'])
        budgets, n_opt, loss_opt = ([o[i] for o in opt] for i in range(3))
        laws[family] = dict(budgets=budgets, n_opt=n_opt, loss_opt=loss_opt,
                            n=fit_power_law(budgets, n_opt), loss=fit_power_law(budgets, loss_opt))

    def against(ref, family):
        """[(budget, m, extrapolated)] of `family` against `ref`'s L*(C) law, at each of `family`'s optima."""
        ref_law = laws.get(ref, {}).get('loss')
        if ref_law is None or family not in laws:
            return []
        lo, hi = min(laws[ref]['budgets']), max(laws[ref]['budgets'])
        out = []
        for budget, loss in zip(laws[family]['budgets'], laws[family]['loss_opt']):
            c_ref = compute_for_loss(ref_law, loss)
            out.append((budget, budget / c_ref, not lo <= c_ref <= hi))
        return out
    multipliers = {f: against(reference, f) for f in laws if f != reference}
    return dict(curves=curves, laws=laws, multipliers=multipliers, reference=reference,
                pair=dict(better=pair[0], worse=pair[1], values=against(*pair)) if all(p in laws for p in pair)
                else None)


def geometric_mean(values):
    return float(math.exp(np.mean(np.log(values)))) if len(values) else None


# -----------------------------------------------------------------------------
# plots (matplotlib, Agg backend: no display needed)

def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_isoflop(analysis, path, labels=None):
    """(a) One panel per family: loss against non-embedding parameters (log x), one curve per budget with its
    fitted parabola and an X at the optimum (the paper's scaling figure)."""
    plt = _pyplot()
    labels = labels or {}
    families = sorted({f for f, _ in analysis['curves']}, key=lambda f: list(labels).index(f) if f in labels else 99)
    budgets = sorted({b for _, b in analysis['curves']})
    colors = {b: plt.cm.viridis(i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}
    ncols = min(3, len(families))
    nrows = -(-len(families) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.8 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(families):]:
        ax.set_visible(False)
    for ax, family in zip(axes.flat, families):
        for budget in budgets:
            c = analysis['curves'].get((family, budget))
            if c is None:
                continue
            n, loss = zip(*c['points'])
            ax.plot(n, loss, 'o', color=colors[budget], ms=4,
                    label=f"{budget:.2g}" + ('' if c['bracketed'] else ' (not bracketed)'))
            if c['coeffs'] is not None:
                x = np.linspace(np.log10(min(n)) - 0.1, np.log10(max(n)) + 0.1, 100)
                ax.plot(10 ** x, np.polyval(c['coeffs'], x), '-', color=colors[budget], lw=1)
            if c['bracketed']:
                ax.plot(c['n_opt'], c['loss_opt'], 'X', color=colors[budget], ms=10, mec='k')
        ax.set_xscale('log')
        ax.set_title(labels.get(family, family))
        ax.set_xlabel('non-embedding parameters')
        ax.grid(alpha=0.3, which='both')
        ax.legend(title='FLOPs', fontsize=7, title_fontsize=7)
    for row in axes:
        row[0].set_ylabel('validation loss (nats/token;\nNELBO for diffusion)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_optima(analysis, path, labels=None):
    """(b) N*(C) and L*(C) on log-log axes, every family, with the fitted power laws."""
    plt = _pyplot()
    labels = labels or {}
    fig, (ax_n, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (family, law) in enumerate(sorted(analysis['laws'].items(),
                                             key=lambda kv: list(labels).index(kv[0]) if kv[0] in labels else 99)):
        if not law['budgets']:
            continue
        color, c = f"C{i}", np.array(law['budgets'])
        grid = np.geomspace(c.min() / 1.5, c.max() * 1.5, 50)
        for ax, key, values in ((ax_n, 'n', law['n_opt']), (ax_l, 'loss', law['loss_opt'])):
            fit = law[key]
            label = labels.get(family, family) + (f" ($C^{{{fit['exponent']:.3f}}}$)" if fit else '')
            ax.plot(c, values, 'o', color=color, label=label)
            if fit:
                ax.plot(grid, power_law(fit, grid), '-', color=color, lw=1)
    for ax, what in ((ax_n, 'N* (non-embedding parameters)'), (ax_l, 'L* (nats/token)')):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('training FLOPs C')
        ax.set_ylabel(what)
        ax.grid(alpha=0.3, which='both')
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for axis in (ax_l.yaxis,):  # losses span little: plain numbers, not 3 x 10^0
        axis.set_major_formatter(plt.FormatStrFormatter('%.2f'))
        axis.set_minor_formatter(plt.FormatStrFormatter('%.2f'))
    ax_n.set_title('compute-optimal size')
    ax_l.set_title('loss at the optimum')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -----------------------------------------------------------------------------
# report.md

def _fmt_n(n):
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


def _table(header, rows):
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def write_report(path, analysis, labels, setup, failed=(), figures=('isoflop.png', 'optima.png')):
    """report.md: set-up, optima table, exponents, multipliers (the paper's numbers beside ours), failed runs, and
    what this scale can and cannot show. `setup` is a list of (name, value) lines; failed: (run, error) pairs;
    figures: the iso-FLOP and optima plots to link (only those that were drawn)."""
    fams = [f for f in labels if any(f == k for k, _ in analysis['curves'])]
    budgets = sorted({b for _, b in analysis['curves']})
    ref, laws = analysis['reference'], analysis['laws']
    out = ["# Iso-FLOP scaling sweep", ""] + [f"- **{k}**: {v}" for k, v in setup] + [""]
    for alt, figure in zip(('iso-FLOP curves', 'optima'), figures):  # the plots drawn (none without a finished run)
        out += [f"![{alt}]({figure})", ""]

    # optima per budget, and the paper's
    out += ["## Compute-optimal size N* and loss L* per budget", "",
            "Parabola of the validation loss in log10 N over the sizes of each budget; N counts non-embedding "
            "parameters, L is in nats/token (NELBO upper bound for the diffusion families); "
            "D* = the tokens a model of size N* trains on (the paper's C / (6 N*) when the runs' token counts are "
            "unknown). *not bracketed* means the grid does not contain the minimum.", ""]
    rows, notes = [], []
    for b in budgets:
        cells = []
        for f in fams:
            c = analysis['curves'].get((f, b))
            if c is None:
                cells.append('-')
            elif c['bracketed']:
                d = c['d_opt']
                cells.append(f"{_fmt_n(c['n_opt'])}, {c['loss_opt']:.3f} (D* {_fmt_n(d)}, "
                             f"{d / c['n_opt']:.3g} tok/param)")
            else:
                cells.append('*not bracketed*')
                notes.append(f"- {labels[f]} at {b:.3g}: {c['reason']}")
        rows.append([f"{b:.3g}"] + cells)
    out += _table(['FLOPs'] + [labels[f] for f in fams], rows) + notes + ([""] if notes else [])
    paper_opt, tag = PAPER['optima']
    paper_fams = ('ar', 'mdlm', 'duo', 'eso')
    out += [f"The paper's optima for comparison ({tag}; SlimPajama, L = 2048, Llama-2 tokens):", ""]
    out += _table(['FLOPs'] + [labels.get(f, f) for f in paper_fams],
                  [[f"{b:.3g}"] + [f"~{_fmt_n(row[f][0])}, {row[f][1]}" for f in paper_fams]
                   for b, row in paper_opt.items()])

    # power laws
    (pa, tag_a), (pb, _) = PAPER['exponent_n'], PAPER['exponent_loss']
    out += ["## Power laws across budgets", "",
            "N* = k C^a and L* = k C^b, straight lines in log-log (no irreducible-loss term), over the bracketed "
            f"budgets only. The paper's exponents: {tag_a} (not the paper's own fits).", ""]
    rows = []
    for f in fams:
        law = laws.get(f, {})
        rows.append([labels[f], len(law.get('budgets', [])),
                     f"{law['n']['exponent']:.3f}" if law.get('n') else '-', pa.get(f, '-'),
                     f"{law['loss']['exponent']:.4f}" if law.get('loss') else '-', pb.get(f, '-')])
    out += _table(['family', 'budgets', 'a (N* ∝ C^a)', 'paper a', 'b (L* ∝ C^b)', 'paper b'], rows)

    # compute multipliers against the reference family (AR)
    (pm, tag_m), (pmf, tag_mf) = PAPER['multiplier'], PAPER['multiplier_figure']
    name = labels.get(ref, ref)
    out += [f"## Compute multipliers against {name}", "",
            f"m = C / C_{ref}: the compute {name}'s L*(C) law needs to reach the family's L* at budget C, as a "
            f"multiple (the paper's convention: \"MDLM needs ~14x the compute of AR\"). Geometric mean over the "
            f"family's bracketed budgets; * marks values read off the law outside the budgets it was fitted on "
            f"(extrapolated).", ""]
    rows = []
    for f in fams:
        if f == ref:
            continue
        ms = {b: (m, x) for b, m, x in analysis['multipliers'].get(f, [])}
        mean = geometric_mean([m for m, _ in ms.values()])
        rows.append([labels[f]] + [f"{ms[b][0]:.2f}{'*' if ms[b][1] else ''}" if b in ms else '-' for b in budgets]
                    + [f"{mean:.2f}" if mean else '-', pm.get(f, '-'), pmf.get(f, '-')])
    out += _table(['family'] + [f"{b:.3g}" for b in budgets] + ['mean', f"paper {tag_m}", f"paper {tag_mf}"], rows)
    if not laws.get(ref, {}).get('loss'):
        out += [f"({name} has fewer than 2 bracketed budgets: no law to measure against.)", ""]

    # the "12%" claim: MDLM trained on the NELBO against MDLM trained on low-var
    pv, tag_p = PAPER['lowvar_vs_elbo']
    pair = analysis['pair']
    out += ["## Low-variance training vs NELBO training (MDLM)", ""]
    if pair and pair['values']:
        mean = geometric_mean([m for _, m, _ in pair['values']])
        per_budget = ", ".join(f"{b:.3g}: {m:.2f}{'*' if x else ''}" for b, m, x in pair['values'])
        out += [f"The NELBO-trained MDLM spends {mean:.2f}x the compute the low-var MDLM law needs for the same loss "
                f"(per budget: {per_budget}), i.e. low-var training is {100 * (1 - 1 / mean):.0f}% more "
                f"FLOPs-efficient. Paper: {pv:.2f}x, {100 * (1 - 1 / pv):.0f}% {tag_p}.", ""]
    else:
        out += ["Not measured: needs bracketed optima for both MDLM variants at 2+ budgets "
                f"(paper: {100 * (1 - 1 / pv):.0f}% {tag_p}).", ""]

    if failed:
        out += ["## Runs that did not finish", ""]
        out += _table(['run', 'error'], [[run, str(err).replace('|', '/')] for run, err in failed])

    out += ["## What this scale can and cannot show", ""]
    if max(budgets, default=0) < 1e18:
        out += ["A sweep this small shows the *method* working end to end: U-shaped iso-FLOP curves, the orderings "
                "of the families at equal compute, and the sign of the low-var vs NELBO gap. It cannot pin down "
                "exponents or multipliers: few budgets spanning little compute, one seed, single-run losses with "
                "evaluation noise, tiny models whose non-embedding count is dominated by the time-conditioning "
                "layers rather than by the transformer, and a corpus whose scaling need not match web text; compare "
                "them with the paper's in sign and rough size only.", ""]
    else:
        out += ["At these budgets the fits are comparable with the paper's, up to the differences in corpus and "
                "tokenizer, one seed per point, and the number of budgets behind each power law.", ""]
    with open(path, 'w') as f:
        f.write("\n".join(out))
