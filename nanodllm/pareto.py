"""The speed-quality Pareto frontier (paper §1.5) that `sweep.py --pareto` runs: every checkpoint over a grid of
sampler settings, each setting sampled, timed and judged by quality.evaluate_setting, rows cached in
<out-dir>/pareto/rows.jsonl, the frontier, its table and its figure.

- `pick_sweep_runs` (which checkpoints of a finished sweep), `pareto_settings` (the sampler settings of a family),
  `run_pareto` (every checkpoint over its settings, rows cached), `pareto_frontier`, `pareto_table`, `plot_pareto`,
  `write_pareto`, `parse_ckpts`.

    python sweep.py --pareto --judge runs/judge/ckpt.pt                   # a finished `python sweep.py`
    python sweep.py --pareto --judge runs/judge/ckpt.pt --ckpts ar=runs/ar/ckpt.pt,mdlm=runs/mdlm/ckpt.pt \
        --out-dir runs/compare --steps 16,32,64,128,256 --alpha0 1,0.5        # any checkpoints
    python -m nanodllm.pareto runs/compare/pareto/pareto.json           # redraw a figure from its JSON

Deviation from the paper (deliberate): a sweep's compute-optimal model at a budget is the trained size with the
lowest validation loss (the fitted optimum N* falls between the grid's sizes and was not trained); the paper plots
its compute-optimal models.
"""
import json
import math
import os

import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, read_checkpoint
from .common import run_info
from .quality import evaluate_setting, file_key, reference, reference_lines, sampler_kwargs, write_json
from .scaling import fit_isoflop

# -----------------------------------------------------------------------------
# the speed-quality Pareto frontier (paper §1.5): every checkpoint over a grid of sampler settings


def pareto_settings(family_name, steps_list, alpha0s=(None,), temperatures=(1.0,), top_ps=(1.0,)):
    """The sampler settings of one checkpoint -> list of dicts(steps, alpha0, temperature, top_p).

    AR has no steps (one setting per temperature and top-p); Eso-LM crosses steps with its sampling-time alpha0
    (None: as trained), and alpha0 = 0 is one setting (all tokens sequential, steps unused); MDLM and Duo cross steps.
    """
    out = []
    for temperature in temperatures:
        for top_p in top_ps:
            if family_name == 'ar':
                out.append(dict(steps=None, alpha0=None, temperature=temperature, top_p=top_p))
                continue
            for alpha0 in (alpha0s if family_name == 'eso' else (None,)):
                for steps in (steps_list if alpha0 != 0 else steps_list[:1]):
                    out.append(dict(steps=steps, alpha0=alpha0, temperature=temperature, top_p=top_p))
    return out


def default_steps(length):
    """Sampling steps to try when none are given: 8, 16, 32, ... up to the sample length (one token per step)."""
    return [2 ** k for k in range(3, length.bit_length())] or [length]


def pick_sweep_runs(runs, budget=None, all_budgets=False, labels=None):
    """The checkpoints of a finished sweep that the frontier samples (paper §1.5 plots the best throughput over the
    compute-optimal models of all budgets). runs: the sweep's completed runs (launch.completed_runs), dicts with
    name, family, size, budget, params, val_loss, ckpt.

    A family's compute-optimal run at a budget is its run with the lowest validation loss: the trained size nearest
    the optimum of the iso-FLOP curve (sizes between the grid's were not trained). Which budget:
    - all_budgets: every budget, one run per family and budget (a family's frontier is then the best over them);
    - budget: that one (ValueError if no completed run has it);
    - default: the largest budget at which the iso-FLOP parabola brackets every family's optimum
      (scaling.fit_isoflop); if no budget does, of the budgets with the most families bracketed, the largest.
    -> (chosen runs, family by family in the order of `runs`, notes: one line per choice saying why)."""
    labels = labels or {}
    families = list(dict.fromkeys(r['family'] for r in runs))
    budgets = sorted({r['budget'] for r in runs})
    at = {(f, b): [r for r in runs if r['family'] == f and r['budget'] == b] for f in families for b in budgets}
    bracketed = {k: len(v) >= 3 and fit_isoflop([r['params'] for r in v], [r['val_loss'] for r in v])['bracketed']
                 for k, v in at.items()}
    notes = []
    if all_budgets:
        chosen_budgets = budgets
        notes.append(f"every budget ({', '.join(f'{b:.3g}' for b in budgets)}): each family's compute-optimal run "
                     f"of each, one frontier per family over all of them")
    elif budget is not None:
        chosen_budgets = [b for b in budgets if math.isclose(b, budget, rel_tol=1e-6)]
        if not chosen_budgets:
            raise ValueError(f"--budget {budget:.6g} has no completed run in this sweep: its budgets with completed "
                             f"runs are {', '.join(f'{b:.6g}' for b in budgets)}")
    else:
        def score(b):
            return sum(bracketed[f, b] for f in families), b
        chosen_budgets = [max(budgets, key=score)]
        n_bracketed = score(chosen_budgets[0])[0]
        notes.append(f"budget {chosen_budgets[0]:.3g} FLOPs: " + (
            "the largest at which every family's optimum is bracketed" if n_bracketed == len(families) else
            f"no budget brackets every family's optimum; this one brackets {n_bracketed} of {len(families)} (the "
            f"most, the largest such budget): pass --budget or --all-budgets to choose"))
    chosen = []
    for f in families:
        for b in chosen_budgets:
            name = labels.get(f, f)
            if not at[f, b]:
                notes.append(f"{name}: no completed run at {b:.3g} FLOPs, left out")
                continue
            best = min(at[f, b], key=lambda r: r['val_loss'])
            chosen.append(best)
            notes.append(f"{name}: {best['name']} ({best['size']}, {best['params'] / 1e6:.3g}M non-embedding "
                         f"parameters, val loss {best['val_loss']:.4f}: the lowest of the {len(at[f, b])} run(s) "
                         f"at {b:.3g} FLOPs" + ("" if bracketed[f, b] else "; the optimum is not bracketed there") + ")")
    return chosen, notes


# the rows cache: <out-dir>/pareto/rows.jsonl, one line {"key": ..., "row": ...} per measured setting

def row_key(path, judge, setting, num_samples, batch_size, length, seed, device):
    """What a row depends on: the checkpoint file, the judge, the sampler setting, the sample count, batch, length
    and seed, and the device (with its CPU thread count: tok/s depends on it) -> a string (sorted JSON)."""
    device = torch.device(device)
    where = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type,
                 threads=torch.get_num_threads() if device.type == 'cpu' else None)
    return json.dumps(dict(ckpt=file_key(path), judge=judge.key, **setting, num_samples=num_samples,
                           batch_size=batch_size, length=length, seed=seed, **where), sort_keys=True)


def read_rows(path):
    """rows.jsonl -> {key: row}; a line left half-written by a kill (or any unreadable line) is skipped: its row is
    measured again."""
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    item = json.loads(line)
                    rows[json.dumps(item['key'], sort_keys=True)] = item['row']
                except (ValueError, KeyError, TypeError):
                    pass
    return rows


def append_row(path, key, row):
    """Append one row as one whole line, in one write call on a file opened for appending. A file whose last line
    was left half-written (killed mid-write) gets a newline first, in the same write, so the new row starts a line
    of its own instead of being glued to the torn one (which read_rows then skips)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    line = (json.dumps(dict(key=json.loads(key), row=row)) + '\n').encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b'\n'
        os.write(fd, (b'\n' if torn else b'') + line)
    finally:
        os.close(fd)


def run_pareto(ckpts, judge, steps_list=None, alpha0s=(None,), temperatures=(1.0,), top_ps=(1.0,), num_samples=32,
               batch_size=None, length=None, seed=0, device='cpu', cache=None, progress=False, log=print):
    """Sample and judge every checkpoint over its settings -> dict(judge, reference, checkpoints, rows, frontier, ...).

    ckpts: list of (label, path) or (label, path, info); info (e.g. the run's name, size and budget) is copied into
    the checkpoint's rows, and a label may hold several checkpoints (its frontier is the best over them).
    length: tokens per sample (default: the shortest training length among the checkpoints), the same for every
    checkpoint, as is the batch size (default: all samples in one call); steps_list default: default_steps(length).
    The reference uses the first checkpoint's data. cache: a rows.jsonl path; a row whose row_key is there is read
    back instead of measured, and a measured row is appended at once, so an interrupted run (KeyboardInterrupt goes
    on to the caller) loses only the row in progress. Checkpoints are checked first and loaded one at a time.
    progress: one tqdm bar over all settings.
    """
    ckpts = [(c[0], c[1], dict(c[2]) if len(c) > 2 else {}) for c in ckpts]
    metas = []
    for _, path, _ in ckpts:  # read and check every checkpoint before sampling: a bad one fails now, not in an hour
        ckpt = read_checkpoint(path)
        metas.append(dict(family=ckpt['family'], seq_len=ckpt['model_config']['seq_len'], data=ckpt['args']['data'],
                          tokenizer=ckpt['tokenizer']))
        del ckpt
    length = length or min(m['seq_len'] for m in metas)
    steps_list = list(steps_list or default_steps(length))
    batch_size = batch_size or num_samples
    ref = reference(judge, metas[0]['data'], metas[0]['tokenizer'], num_samples, length, seed)
    plan = [(label, path, info, s) for (label, path, info), m in zip(ckpts, metas)
            for s in pareto_settings(m['family'], steps_list, alpha0s, temperatures, top_ps)]
    keys = [row_key(path, judge, s, num_samples, batch_size, length, seed, device) for _, path, _, s in plan]
    cached = read_rows(cache) if cache else {}
    n_cached = sum(k in cached for k in keys)
    log(reference_lines(judge, ref))
    log(f"{len(plan)} settings of {len(ckpts)} checkpoints, {num_samples} samples of {length} tokens each, batch "
        f"{batch_size}: {n_cached} read back from {cache}, {len(plan) - n_cached} to measure" if cache else
        f"{len(plan)} settings of {len(ckpts)} checkpoints, {num_samples} samples of {length} tokens each, batch "
        f"{batch_size}")
    result = dict(judge=judge.name, reference=ref, num_samples=num_samples, batch_size=batch_size, length=length,
                  seed=seed, steps=steps_list, run_info=run_info(torch.device(device)),
                  checkpoints=[dict(info, label=label, ckpt=path) for label, path, info in ckpts], rows=[])
    say = tqdm.write if progress else log
    loaded_path, model, ckpt = None, None, None
    with tqdm(total=len(plan), desc='pareto', unit='setting', disable=not progress, dynamic_ncols=True) as bar:
        for (label, path, info, s), key in zip(plan, keys):
            row = cached.get(key)
            if row is None:
                if loaded_path != path:
                    model = ckpt = None  # free the previous model before loading the next
                    model, ckpt = load_checkpoint(path, device)
                    loaded_path = path
                row = evaluate_setting(model, ckpt, judge, num_samples, length, s['steps'], batch_size,
                                       s['temperature'], s['top_p'], seed, **sampler_kwargs(ckpt, s['alpha0']))
                row.update(options=ckpt['options'], val_loss=ckpt.get('val_loss'))
                if cache:
                    append_row(cache, key, row)
            row = dict(row, **info, label=label, ckpt=path)
            result['rows'].append(row)
            bar.update()
            say(f"{label}{' ' + row['run'] if 'run' in row else ''} {setting_name(row)}: NFE {row['nfe']:.0f}, "
                f"{row['tok_s']:,.0f} tok/s, gen PPL {row['gen_ppl']:.2f}, entropy {row['entropy']:.3f}"
                + (" (read back)" if key in cached else ""))
    result['frontier'] = pareto_frontier(result['rows'])
    return result


def setting_name(r):
    parts = [f"T={r['steps']}"] if r['steps'] is not None else []
    if r.get('alpha0') is not None:
        parts.append(f"a0={r['alpha0']:g}")
    if r['temperature'] != 1.0:
        parts.append(f"temp={r['temperature']:g}")
    if r['top_p'] != 1.0:
        parts.append(f"p={r['top_p']:g}")
    return ' '.join(parts) or 'default'


def pareto_frontier(rows):
    """-> list of bools: row i is on its label's frontier iff no row of the same label is at least as fast
    (tok/s) and at least as good (gen PPL), and strictly better in one of the two."""
    def dominates(a, b):
        return (a['tok_s'] >= b['tok_s'] and a['gen_ppl'] <= b['gen_ppl']
                and (a['tok_s'] > b['tok_s'] or a['gen_ppl'] < b['gen_ppl']))
    return [not any(o['label'] == r['label'] and dominates(o, r) for o in rows) for r in rows]


def _checkpoint_name(r):
    """A row's checkpoint in the table and plot: its sweep run, else its folder name."""
    return r.get('run') or os.path.basename(os.path.dirname(os.path.abspath(r['ckpt'])))


def pareto_table(result):
    """Markdown: the set-up and reference, how the checkpoints were chosen (result['notes'], if any), then every row
    (label, checkpoint, setting, NFE, seconds, tok/s, gen PPL, entropy, frontier)."""
    ref = result['reference']
    lines = [f"Judge: {result['judge']}. {result['num_samples']} samples of {result['length']} tokens per setting, "
             f"batch {result['batch_size']}, on {result['run_info'].get('device', '?')}. Real held-out text: gen PPL "
             f"{ref['real_ppl']:.2f}, entropy {ref['real_entropy']:.3f}; the same tokens shuffled: gen PPL "
             f"{ref['shuffled_ppl']:.2f}.", '']
    if result.get('notes'):
        lines += ['Checkpoints:', ''] + [f"- {n}" for n in result['notes']] + ['']
    lines += ['| model | checkpoint | setting | NFE | seconds | tok/s | gen PPL | entropy | frontier |',
              '|---|---|---|---|---|---|---|---|---|']
    for r, front in zip(result['rows'], result['frontier']):
        lines.append(f"| {r['label']} | {_checkpoint_name(r)} | {setting_name(r)} | {r['nfe']:.0f} | "
                     f"{r['seconds']:.2f} | {r['tok_s']:,.0f} | {r['gen_ppl']:.2f} | {r['entropy']:.3f} | "
                     f"{'yes' if front else ''} |")
    return '\n'.join(lines) + '\n'


def plot_pareto(result, path):
    """Two panels against gen PPL (x, log): tok/s (log) with each label's frontier as a line, like the paper's
    figure, and entropy; the real held-out text is the dashed reference line in both. Frontier points are annotated
    with their setting (and checkpoint, where a label has several), placed by `place_labels` so that no two labels
    overlap; a label with no free place is left out (every row is in pareto.md) and the title says how many."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 (matplotlib.ticker below)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.6), gridspec_kw=dict(width_ratios=(3, 2)))
    labels = list(dict.fromkeys(r['label'] for r in result['rows']))
    notes = []                                                                 # (x, y, text, colour) to place
    for i, label in enumerate(labels):
        color = f"C{i}"
        pts = [(r, f) for r, f in zip(result['rows'], result['frontier']) if r['label'] == label]
        several = len({r['ckpt'] for r, _ in pts}) > 1
        ax1.scatter([r['gen_ppl'] for r, _ in pts], [r['tok_s'] for r, _ in pts], color=color, s=14, alpha=0.4)
        front = sorted((r for r, f in pts if f), key=lambda r: r['gen_ppl'])
        ax1.plot([r['gen_ppl'] for r in front], [r['tok_s'] for r in front], '-o', color=color, ms=4, label=label)
        ends_first = front[:1] + front[-1:] + front[1:-1] if len(front) > 1 else front  # the two ends matter most
        for r in ends_first:
            where = f"{r['size']}@{r['budget']:.2g}" if 'size' in r and 'budget' in r else _checkpoint_name(r)
            notes.append((r['gen_ppl'], r['tok_s'], setting_name(r) + (f" {where}" if several else ''), color))
        ax2.scatter([r['gen_ppl'] for r, _ in pts], [r['entropy'] for r, _ in pts], color=color, label=label, s=14)
    ref = result['reference']
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 20, 30, 50 rather than 2 x 10^1
    some = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in '235' else '')
    for ax in (ax1, ax2):
        ax.axvline(ref['real_ppl'], color='k', ls='--', lw=1, label=f"real text ({ref['real_ppl']:.1f})")
        ax.set_xscale('log')
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(some)
        ax.set_xlabel('generative perplexity under the judge (lower is better)')
        ax.grid(alpha=0.3, which='both')
    ax2.axhline(ref['real_entropy'], color='k', ls=':', lw=1, label=f"real text entropy ({ref['real_entropy']:.2f})")
    ax1.set_yscale('log')
    ax1.yaxis.set_major_formatter(plain)
    ax1.set_ylabel('sampling throughput (generated tokens/s)')
    ax2.set_ylabel('unigram entropy per sample (nats)')
    title = (f"speed vs quality, {result['num_samples']} x {result['length']} tokens, batch {result['batch_size']}; "
             f"labels: frontier points")
    ax1.set_title(title, fontsize=9)
    ax2.set_title(f"diversity (shuffled real text: gen PPL {ref['shuffled_ppl']:.0f})", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    left_out = place_labels(ax1, notes)
    if left_out:
        ax1.set_title(f"{title} ({left_out} of {len(notes)} left out for lack of room: see the table)", fontsize=9)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def place_labels(ax, notes, fontsize=6):
    """Annotate (x, y, text, colour) points of `ax` in order, each at the first of a few offsets (8 directions, 3
    distances; a thin leader line past the nearest) where its box overlaps no label placed before, no data point,
    the legend or the axes' edge -> the number of notes left out (no free place)."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    taken = []
    if legend is not None:                       # freeze the legend where 'best' put it: labels must not move it
        box = legend.get_window_extent(renderer)
        legend.set_loc(tuple(ax.transAxes.inverted().transform((box.x0, box.y0))))
        taken.append(box.expanded(1.02, 1.05))
    for coll in ax.collections:                  # every data point is an obstacle (a box of +-3 px)
        for px, py in ax.transData.transform(coll.get_offsets()):
            taken.append(Bbox([[px - 3, py - 3], [px + 3, py + 3]]))
    frame = ax.get_window_extent(renderer)
    directions = [(1, 0.4), (1, -1), (-1, 0.4), (-1, -1), (0, 1), (0, -1.6), (1, 1), (-1, 1)]
    left_out = 0
    for x, y, text, color in notes:
        for dist in (4, 12, 22):
            for dx, dy in directions:
                ha = 'left' if dx > 0 else 'right' if dx < 0 else 'center'
                va = 'bottom' if dy > 0 else 'top' if dy < -1 else 'center'
                arrow = dict(arrowstyle='-', lw=0.4, color=color, alpha=0.7) if dist > 4 else None
                t = ax.annotate(text, (x, y), xytext=(dx * dist, dy * dist), textcoords='offset points',
                                fontsize=fontsize, color=color, ha=ha, va=va, arrowprops=arrow)
                t.update_positions(renderer)
                box = Text.get_window_extent(t, renderer).expanded(1.04, 1.15)  # the text, not its leader
                if (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                        and not any(box.overlaps(o) for o in taken)):
                    taken.append(box)
                    break
                t.remove()
            else:
                continue
            break
        else:
            left_out += 1
    return left_out


def write_pareto(result, out_dir, name='pareto'):
    """-> paths of <out_dir>/<name>.json, .png, .md."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ('json', 'png', 'md')]
    write_json(paths[0], result)
    plot_pareto(result, paths[1])
    with open(paths[2], 'w') as f:
        f.write(pareto_table(result))
    return paths


def parse_ckpts(text):
    """'a/ckpt.pt,eso=runs/eso-alpha0=1/ckpt.pt' -> [(label, path)]: 'label=' is a prefix without '/'; the default
    label is the checkpoint's folder name."""
    out = []
    for item in (v.strip() for v in text.split(',') if v.strip()):
        label, sep, path = item.partition('=')
        if not sep or '/' in label or os.sep in label or os.path.exists(item):
            label, path = os.path.basename(os.path.dirname(os.path.abspath(item))), item
        out.append((label, path))
    return out


if __name__ == '__main__':  # redraw figures from their JSON: python -m nanodllm.pareto runs/x/pareto/pareto.json ...
    import sys
    for name in sys.argv[1:] or sys.exit("usage: python -m nanodllm.pareto PARETO.json ... (redraws PARETO.png)"):
        with open(name) as f:
            plot_pareto(json.load(f), os.path.splitext(name)[0] + '.png')
        print(f"redrew {os.path.splitext(name)[0]}.png")
