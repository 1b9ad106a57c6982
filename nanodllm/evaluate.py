"""Sample quality (spec §7.2-7.4, paper §1.5): generative perplexity under a judge LM, unigram entropy, sampler
throughput, and the speed-quality Pareto frontier. Owns every sample-quality number nanodllm reports.

- Judges: a nanodllm AR checkpoint (`ARJudge`, offline, the default) or any Hugging Face causal LM (`HFJudge`, the
  optional extra `pip install -e ".[judge]"`), chosen by `load_judge('path/ckpt.pt' | 'hf:NAME')`. A judge only
  encodes text and returns logits; re-tokenization, windows and pooling are written once, in `judge_nll`.
- `gen_ppl(judge, texts)`: decode the samples to text, re-tokenize with the judge's tokenizer, score each text in
  windows of the judge's context (`judge_windows`), exp of the NLL pooled over all scored tokens of all samples
  (spec §7.2).
- `unigram_entropy(x)`: entropy of each sample's token histogram in nats, averaged over samples (spec §7.3).
- `timed_sample`: tokens/s and NFE of the sampler alone (warm-up excluded, GPU synchronized, judge excluded; §7.4).
- `reference`: the judge on real held-out text and on the same tokens shuffled, the scale every evaluation prints.
- `evaluate_checkpoint` (sample.py --eval) and the Pareto pieces (`pareto_settings`, `run_pareto`,
  `pareto_frontier`, `pareto_table`, `plot_pareto`, `write_pareto`) that sweep.py's --pareto mode calls.

    python sample.py --ckpt runs/mdlm/ckpt.pt --eval --judge runs/judge/ckpt.pt --num-samples 64 --steps 16,32,64
    python -m nanodllm.evaluate --pareto --ckpts runs/ar/ckpt.pt,runs/mdlm/ckpt.pt,runs/duo/ckpt.pt,runs/eso/ckpt.pt \
        --judge runs/judge/ckpt.pt --steps 16,32,64,128,256 --alpha0 1,0.5 --num-samples 32 --out-dir runs/pareto

Deviations from the paper's protocol (spec §7.2, §7.4), all deliberate:
- A text is scored in one window of the judge's context when it fits, as in the paper: [BOS] + its tokens, every
  token scored, the first one from BOS alone (the paper's Llama judge does the same through its <s>; a judge
  without a BOS leaves the first token unscored). A longer text continues in windows that slide by half a context
  and score only their new tokens, so no token is scored from BOS alone past the first; the paper cuts
  non-overlapping chunks. (A nanodllm AR judge trained at L = 256 takes 255 tokens after BOS, so a 256-token
  diffusion sample needs a second window for its last token: non-overlapping chunks would score that one token
  from BOS alone, a bias against the diffusion families that AR's 255-token samples escape.)
- The re-tokenized text is scored in full; the paper truncates it at the sampler's length L in judge tokens.
- Throughput counts the generated tokens only (AR: L - 1 after its BOS; prompts are not counted) and times the
  sampler alone; the paper's gen_ppl.sh timing includes the Llama scoring.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .common import get_family, load_checkpoint, run_info

# -----------------------------------------------------------------------------
# judges: name, context (tokens per window), bos (id or None), encode(text) -> ids, logits(x (B, T), valid) -> fp32


class ARJudge:
    """A nanodllm AR checkpoint as the judge: its tokenizer, its training length as the window, its BOS."""

    def __init__(self, path, device='cpu'):
        if not os.path.isfile(path):
            raise ValueError(f"no judge checkpoint at {path}: train one with `python train.py --family ar --out-dir "
                             f"runs/judge` and pass --judge runs/judge/ckpt.pt, or use hf:NAME")
        try:
            self.model, ckpt = load_checkpoint(path, device)
        except ValueError as e:  # load_checkpoint's one-line CheckpointError for a corrupt, unsafe or foreign file
            raise ValueError(f"judge: {e}") from None
        if ckpt['family'] != 'ar':
            raise ValueError(f"the judge {path} is a {ckpt['family']} checkpoint: a judge must be an AR checkpoint "
                             f"(train.py --family ar) or hf:NAME")
        self.tokenizer = data.get_tokenizer(ckpt['tokenizer'])
        self.context, self.bos = self.model.cfg.seq_len, self.tokenizer.bos
        self.name = (f"{path} (nanodllm AR, {ckpt['args'].get('size')}, {ckpt['tokenizer']} tokens, "
                     f"{ckpt.get('step')} steps, val {ckpt.get('val_loss', float('nan')):.4f})")

    def encode(self, text):
        return self.tokenizer.encode(text)

    @torch.no_grad()
    def logits(self, x, valid):
        """x (B, T) ids, right-padded; valid (B, T) bool. Causal attention: padding never reaches a real position."""
        return self.model(x, attn='causal')                                     # (B, T, V) fp32, mask = -1e6


class HFJudge:
    """Any Hugging Face causal LM through `transformers` (the optional extra `judge`). `name` is a hub name, a local
    folder, or a .gguf file (read with `gguf_file=`; needs the `gguf` package, also in the extra)."""

    def __init__(self, name, device='cpu', model=None, tokenizer=None):
        if model is None:
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer  # optional: only this judge needs it
            except ImportError:
                raise ValueError(f"the judge hf:{name} needs transformers: pip install -e \".[judge]\", or pass an "
                                 f"AR checkpoint as the judge") from None
            where, extra = name, {}
            if name.endswith('.gguf'):
                where, extra = os.path.dirname(os.path.abspath(name)), dict(gguf_file=os.path.basename(name))
            try:
                tokenizer = AutoTokenizer.from_pretrained(where, **extra)
                model = AutoModelForCausalLM.from_pretrained(where, **extra)
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot load the judge hf:{name} ({str(e).splitlines()[0][:200]}): pass a hub name "
                                 f"such as hf:gpt2-large, a local folder or a .gguf file") from None
        self.model, self.tokenizer = model.to(device).eval(), tokenizer
        cfg = model.config  # GPT-2: n_positions 1024 (also max_position_embeddings); Llama-2: 4096
        self.context = getattr(cfg, 'max_position_embeddings', None) or getattr(cfg, 'n_positions', None) or 1024
        self.bos = tokenizer.bos_token_id  # GPT-2: <|endoftext|>; Llama: <s>
        self.name = f"hf:{name}"

    def encode(self, text):
        return self.tokenizer(text, add_special_tokens=False)['input_ids']  # BOS is added per window by judge_nll

    @torch.no_grad()
    def logits(self, x, valid):
        return self.model(input_ids=x, attention_mask=valid.long()).logits.float()


def load_judge(spec, device='cpu'):
    """'hf:NAME' -> HFJudge; anything else is the path of a nanodllm AR checkpoint -> ARJudge. ValueError if bad."""
    return HFJudge(spec[3:], device) if spec.startswith('hf:') else ARJudge(spec, device)


def judge_windows(ids, context, bos, stride=None):
    """Cut one text's judge ids into windows -> list of (window ids, n_scored): the last n_scored ids of a window are
    scored, each from the ids before it in the window.

    The first window is [bos] + ids[:context - 1], all scored (the first id from BOS alone); without a BOS it is
    ids[:context] and its first id is never scored. Later windows slide by `stride` new ids (default context // 2):
    each is the `context` ids ending at its last new id, so every later id is scored with at least
    context - stride ids before it. A text that fits the first window (the usual case) is scored in one window.
    """
    stride = stride or max(1, context // 2)
    prefix = [] if bos is None else [bos]
    first = prefix + ids[:context - len(prefix)]
    windows = [(first, len(first) - 1)] if len(first) > 1 else []
    done = len(first) - len(prefix)                                            # ids scored or skipped so far
    while done < len(ids):
        end = min(done + stride, len(ids))
        windows.append((ids[end - context:end], end - done))
        done = end
    return windows


@torch.no_grad()
def judge_nll(judge, texts, batch_size=8, stride=None):
    """Re-tokenize texts with the judge and score them -> (nll_sum, n_tokens) over all scored tokens, float64.

    Windows of all texts are batched (right-padded; logits[:, :-1] predict inputs[:, 1:], spec §7.2 step 4).
    """
    windows = [w for text in texts for w in judge_windows(judge.encode(text), judge.context, judge.bos, stride)]
    device = next(judge.model.parameters()).device
    nll_sum, n_tokens = 0.0, 0
    for b in range(0, len(windows), batch_size):
        chunk = windows[b:b + batch_size]
        T = max(len(w) for w, _ in chunk)
        x = torch.zeros(len(chunk), T, dtype=torch.long, device=device)       # (B, T) right-padded with id 0
        valid = torch.zeros(len(chunk), T, dtype=torch.bool, device=device)
        scored = torch.zeros(len(chunk), T - 1, dtype=torch.bool, device=device)  # target x[:, j + 1] is scored
        for i, (w, k) in enumerate(chunk):
            x[i, :len(w)] = torch.tensor(w, device=device)
            valid[i, :len(w)] = True
            scored[i, len(w) - 1 - k:len(w) - 1] = True                        # the last k ids of the window
        logits = judge.logits(x, valid)[:, :-1]                                # (B, T-1, V) predict x[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction='none')  # (B, T-1)
        nll_sum += nll[scored].double().sum().item()
        n_tokens += int(scored.sum())
    return nll_sum, n_tokens


def gen_ppl(judge, texts, batch_size=8):
    """Generative perplexity: exp(sum of NLL / number of scored tokens), pooled over all texts (spec §7.2 step 5)."""
    nll_sum, n_tokens = judge_nll(judge, texts, batch_size)
    return math.exp(nll_sum / n_tokens) if n_tokens else float('nan')


# -----------------------------------------------------------------------------
# entropy, throughput


def unigram_entropy(x):
    """x (n, L) token ids -> mean over samples of -sum_j p_j log p_j, p = the sample's token histogram (spec §7.3).
    Repetitive text has a low gen PPL and a low entropy; real text and the same tokens shuffled have equal entropy."""
    x = torch.as_tensor(x).long().cpu()
    ent = []
    for row in x:
        p = torch.bincount(row).double()
        p = p[p > 0] / len(row)
        ent.append(-(p * p.log()).sum().item())
    return sum(ent) / len(ent)


def _sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def timed_sample(family, model, n, length, batch_size, steps=None, prompt=None, temperature=1.0, top_p=1.0, seed=0,
                 **kwargs):
    """Draw n samples in calls of batch_size -> (x (n, length) on CPU, nfe per call (mean), seconds).

    seconds covers the sampler calls only: a short untimed warm-up call at the full batch size comes first (CUDA
    context, kernels, thread pools), and the device is synchronized around each timed call. The samples come from
    one generator seeded with `seed` (the warm-up has its own), so timing never changes them.
    """
    device = next(model.parameters()).device
    P = 0 if prompt is None else len(prompt)
    family.sample(model, min(batch_size, n), min(length, P + 4), steps=1, prompt=prompt, temperature=temperature,
                  top_p=top_p, generator=torch.Generator(device).manual_seed(seed + 1), **kwargs)  # warm-up
    generator = torch.Generator(device).manual_seed(seed)
    xs, nfes, seconds = [], [], 0.0
    for b in range(0, n, batch_size):
        _sync(device)
        t0 = time.perf_counter()
        x, nfe = family.sample(model, min(batch_size, n - b), length, steps=steps, prompt=prompt,
                               temperature=temperature, top_p=top_p, generator=generator, **kwargs)
        _sync(device)
        seconds += time.perf_counter() - t0
        xs.append(x.cpu())
        nfes.append(nfe)
    return torch.cat(xs), sum(nfes) / len(nfes), seconds


# -----------------------------------------------------------------------------
# one checkpoint: reference scale and one row per sampler setting


def reference(judge, data_name, tokenizer_name, n, length, seed=0, batch_size=8):
    """The judge on n blocks of `length` real held-out tokens (the val split of the data, spread evenly) and on the
    same tokens shuffled within each block -> dict(real_ppl, shuffled_ppl, real_entropy, shuffled_entropy, ...)."""
    try:
        meta = data.prepare(data_name, tokenizer_name)
    except (OSError, ValueError) as e:
        raise ValueError(f"the real-text reference reads the checkpoint's data {data_name!r}: {e}") from None
    val = np.memmap(os.path.join(meta['out_dir'], 'val.bin'), dtype=meta['dtype'], mode='r')
    if len(val) < length:
        raise ValueError(f"the val split of {data_name!r} has {len(val)} tokens, fewer than one sample of {length}: "
                         f"use a shorter --length or more data")
    starts = np.linspace(0, len(val) - length, n).astype(np.int64)
    real = torch.from_numpy(np.stack([val[s:s + length] for s in starts]).astype(np.int64))  # (n, length)
    g = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([row[torch.randperm(length, generator=g)] for row in real])
    tok = data.get_tokenizer(tokenizer_name)
    return dict(real_ppl=gen_ppl(judge, [tok.decode(r) for r in real], batch_size),
                shuffled_ppl=gen_ppl(judge, [tok.decode(r) for r in shuffled], batch_size),
                real_entropy=unigram_entropy(real), shuffled_entropy=unigram_entropy(shuffled),
                data=data_name, tokenizer=tokenizer_name, n=n, length=length)


def sampler_kwargs(ckpt, alpha0=None):
    """Family-specific sampler keywords: Eso-LM samples at the trained alpha0 unless alpha0 is given (spec §4.5)."""
    if ckpt['family'] != 'eso':
        return {}
    return dict(alpha0=ckpt['options'].get('alpha0', 1.0) if alpha0 is None else alpha0)


def evaluate_setting(model, ckpt, judge, num_samples, length, steps=None, batch_size=None, temperature=1.0, top_p=1.0,
                     seed=0, judge_batch_size=8, **kwargs):
    """Sample with one setting, time it, decode, judge -> one row (dict). AR starts from BOS, which is not scored,
    not counted and not part of the entropy; the diffusion families generate all `length` tokens."""
    family = get_family(ckpt['family'])
    tok = data.get_tokenizer(ckpt['tokenizer'])
    prompt = torch.tensor([tok.bos]) if getattr(family, 'BOS_PREFIX', False) else None
    P = 0 if prompt is None else 1
    steps = steps or None                                                      # 0 / None: one step per token
    x, nfe, seconds = timed_sample(family, model, num_samples, length, batch_size or num_samples, steps, prompt,
                                   temperature, top_p, seed, **kwargs)
    x = x[:, P:]                                                               # (n, length - P) generated tokens
    texts = [tok.decode(row, mask_id=model.cfg.mask_id) for row in x]
    nll_sum, n_tokens = judge_nll(judge, texts, judge_batch_size)
    return dict(family=ckpt['family'], steps=None if ckpt['family'] == 'ar' else (steps or length),
                alpha0=kwargs.get('alpha0'), temperature=temperature, top_p=top_p, nfe=nfe, seconds=seconds,
                tok_s=x.numel() / seconds, gen_ppl=math.exp(nll_sum / n_tokens) if n_tokens else float('nan'),
                entropy=unigram_entropy(x), judge_tokens=n_tokens, num_samples=num_samples,
                batch_size=batch_size or num_samples, length=length, generated_tokens=x.size(1),
                sampler_options={k: v for k, v in kwargs.items() if k != 'alpha0'}, sample=texts[0][:300])


ROW_HEADER = '| steps | NFE | seconds | tok/s | gen PPL | entropy |\n|---|---|---|---|---|---|'


def row_line(r):
    return (f"| {r['steps'] if r['steps'] is not None else '-'} | {r['nfe']:.0f} | {r['seconds']:.2f} | "
            f"{r['tok_s']:,.0f} | {r['gen_ppl']:.2f} | {r['entropy']:.3f} |")


def reference_lines(judge, ref):
    return (f"judge: {judge.name}\n"
            f"reference, {ref['n']} x {ref['length']} held-out tokens of {ref['data']}: real text gen PPL "
            f"{ref['real_ppl']:.2f} (entropy {ref['real_entropy']:.3f}), same tokens shuffled gen PPL "
            f"{ref['shuffled_ppl']:.2f} (entropy {ref['shuffled_entropy']:.3f})")


def evaluate_checkpoint(model, ckpt, judge, steps_list, num_samples, length, batch_size=None, temperature=1.0,
                        top_p=1.0, seed=0, log=print, **kwargs):
    """sample.py --eval: the reference, then one row per step count -> dict(judge, reference, rows, ...) for JSON."""
    family = get_family(ckpt['family'])
    P = 1 if getattr(family, 'BOS_PREFIX', False) else 0
    ref = reference(judge, ckpt['args']['data'], ckpt['tokenizer'], num_samples, length - P, seed)
    log(reference_lines(judge, ref))
    log(f"{ckpt['family']} {ckpt['options']} | {num_samples} samples of {length} tokens, batch "
        f"{batch_size or num_samples} | {kwargs}" + (" | AR ignores --steps" if ckpt['family'] == 'ar' else ''))
    log(ROW_HEADER)
    rows = []
    for steps in (steps_list if ckpt['family'] != 'ar' else steps_list[:1]):
        rows.append(evaluate_setting(model, ckpt, judge, num_samples, length, steps, batch_size, temperature, top_p,
                                     seed, **kwargs))
        log(row_line(rows[-1]))
    device = next(model.parameters()).device
    return dict(judge=judge.name, reference=ref, rows=rows, family=ckpt['family'], options=ckpt['options'],
                val_loss=ckpt.get('val_loss'), run_info=run_info(device))


def write_json(path, obj):
    """Write obj as JSON through a temporary file (a crash never leaves half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f, indent=2)
    os.replace(path + '.tmp', path)


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


def run_pareto(ckpts, judge, steps_list, alpha0s=(None,), temperatures=(1.0,), top_ps=(1.0,), num_samples=32,
               batch_size=None, length=None, seed=0, device='cpu', log=print, on_row=None):
    """Sample and judge every checkpoint over its settings -> dict(judge, reference, rows, ...).

    ckpts: list of (label, path). length: tokens per sample (default: the shortest training length among the
    checkpoints); every checkpoint samples the same length at the same batch size. The reference uses the first
    checkpoint's data. on_row(result so far) is called after every row (e.g. to save partial results).
    """
    loaded = [(label, path, *load_checkpoint(path, device)) for label, path in ckpts]
    length = length or min(model.cfg.seq_len for _, _, model, _ in loaded)
    first = loaded[0][3]
    ref = reference(judge, first['args']['data'], first['tokenizer'], num_samples, length, seed)
    log(reference_lines(judge, ref))
    result = dict(judge=judge.name, reference=ref, num_samples=num_samples, batch_size=batch_size or num_samples,
                  length=length, seed=seed, run_info=run_info(torch.device(device)), rows=[])
    for label, path, model, ckpt in loaded:
        log(f"--- {label}: {path} | {ckpt['family']} {ckpt['options']} | val {ckpt.get('val_loss', float('nan')):.4f}")
        log('| setting ' + ROW_HEADER.replace('\n|', '\n|---|', 1))
        for s in pareto_settings(ckpt['family'], steps_list, alpha0s, temperatures, top_ps):
            kwargs = sampler_kwargs(ckpt, s['alpha0'])
            row = evaluate_setting(model, ckpt, judge, num_samples, length, s['steps'], batch_size, s['temperature'],
                                   s['top_p'], seed, **kwargs)
            row.update(label=label, ckpt=path, options=ckpt['options'], val_loss=ckpt.get('val_loss'))
            result['rows'].append(row)
            log(f"| {setting_name(row)} " + row_line(row))
            if on_row is not None:
                on_row(result)
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


def pareto_table(result):
    """Markdown: the reference, then every row (label, setting, NFE, tok/s, gen PPL, entropy, frontier)."""
    ref = result['reference']
    lines = [f"Judge: {result['judge']}. {result['num_samples']} samples of {result['length']} tokens per setting, "
             f"batch {result['batch_size']}. Real held-out text: gen PPL {ref['real_ppl']:.2f}, entropy "
             f"{ref['real_entropy']:.3f}; the same tokens shuffled: gen PPL {ref['shuffled_ppl']:.2f}.", '',
             '| model | setting | NFE | seconds | tok/s | gen PPL | entropy | frontier |',
             '|---|---|---|---|---|---|---|---|']
    for r, front in zip(result['rows'], result['frontier']):
        lines.append(f"| {r['label']} | {setting_name(r)} | {r['nfe']:.0f} | {r['seconds']:.2f} | {r['tok_s']:,.0f} "
                     f"| {r['gen_ppl']:.2f} | {r['entropy']:.3f} | {'yes' if front else ''} |")
    return '\n'.join(lines) + '\n'


def plot_pareto(result, path):
    """Two panels against gen PPL (x, log): tok/s (log) with each label's frontier as a line, like the paper's
    figure, and entropy; the real held-out text is the dashed reference line in both."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels = list(dict.fromkeys(r['label'] for r in result['rows']))
    for i, label in enumerate(labels):
        color = f"C{i}"
        pts = [(r, f) for r, f in zip(result['rows'], result['frontier']) if r['label'] == label]
        ax1.scatter([r['gen_ppl'] for r, _ in pts], [r['tok_s'] for r, _ in pts], color=color, s=18, alpha=0.6)
        front = sorted((r for r, f in pts if f), key=lambda r: r['gen_ppl'])
        ax1.plot([r['gen_ppl'] for r in front], [r['tok_s'] for r in front], '-o', color=color, label=label)
        for r, _ in pts:
            ax1.annotate(setting_name(r), (r['gen_ppl'], r['tok_s']), fontsize=6, color=color,
                         xytext=(3, 3), textcoords='offset points')
        ax2.scatter([r['gen_ppl'] for r, _ in pts], [r['entropy'] for r, _ in pts], color=color, label=label, s=18)
    ref = result['reference']
    for ax in (ax1, ax2):
        ax.axvline(ref['real_ppl'], color='k', ls='--', lw=1, label=f"real text ({ref['real_ppl']:.1f})")
        ax.set_xscale('log')
        ax.set_xlabel('generative perplexity under the judge (lower is better)')
        ax.grid(alpha=0.3, which='both')
    ax2.axhline(ref['real_entropy'], color='k', ls=':', lw=1, label=f"real text entropy ({ref['real_entropy']:.2f})")
    ax1.set_yscale('log')
    ax1.set_ylabel('sampling throughput (generated tokens/s)')
    ax2.set_ylabel('unigram entropy per sample (nats)')
    ax1.set_title(f"speed vs quality, {result['num_samples']} x {result['length']} tokens, batch "
                  f"{result['batch_size']}", fontsize=9)
    ax2.set_title(f"diversity (shuffled real text: gen PPL {ref['shuffled_ppl']:.0f})", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_pareto(result, out_dir, name='pareto'):
    """-> paths of <out_dir>/<name>.json, .png, .md."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ('json', 'png', 'md')]
    write_json(paths[0], result)
    plot_pareto(result, paths[1])
    with open(paths[2], 'w') as f:
        f.write(pareto_table(result))
    return paths


# -----------------------------------------------------------------------------
# command line (sweep.py --pareto will call the same functions)


def parse_list(text, kind=int, flag='--steps'):
    """'16,32,64' -> [16, 32, 64]; ValueError naming the flag if an item does not parse."""
    try:
        return [kind(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes a comma-separated list of {kind.__name__} values, got {text!r}") from None


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


def main(argv=None):
    p = argparse.ArgumentParser(description='Speed-quality Pareto frontier of nanodllm checkpoints (paper §1.5): '
                                'gen PPL, entropy and tok/s over sampler settings -> JSON, PNG, markdown.',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--pareto', action='store_true', help='run the Pareto sweep (the only mode of this command)')
    p.add_argument('--ckpts', required=True, help='comma-separated checkpoints, optionally label=path')
    p.add_argument('--judge', required=True, help='an AR checkpoint (nanodllm) or hf:NAME (needs the judge extra)')
    p.add_argument('--steps', default='16,32,64,128,256', help='diffusion sampling steps to try (AR ignores them)')
    p.add_argument('--alpha0', default='', help='eso: sampling-time alpha0 values (default: as trained)')
    p.add_argument('--temperature', default='1.0', help='comma-separated sampling temperatures')
    p.add_argument('--top-p', default='1.0', help='comma-separated nucleus masses')
    p.add_argument('--num-samples', type=int, default=32, help='samples per setting')
    p.add_argument('--batch-size', type=int, default=0, help='samples per sampler call (0: all); the paper: the '
                   'largest power of two that fits')
    p.add_argument('--length', type=int, default=0, help='tokens per sample (0: the shortest training length)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--out-dir', default='runs/pareto', help='where pareto.json, pareto.png and pareto.md go')
    args = p.parse_args(argv)
    if not args.pareto:
        p.exit(2, "error: pass --pareto (this command only runs the Pareto sweep; for one checkpoint use "
                  "`python sample.py --ckpt X --eval --judge J`)\n")
    try:
        steps = parse_list(args.steps, int, '--steps')
        alpha0s = parse_list(args.alpha0, float, '--alpha0') or [None]
        temperatures = parse_list(args.temperature, float, '--temperature')
        top_ps = parse_list(args.top_p, float, '--top-p')
        ckpts = parse_ckpts(args.ckpts)
        if not ckpts or not steps or min(steps) < 1 or args.num_samples < 1 or args.batch_size < 0:
            raise ValueError("need at least one checkpoint, steps >= 1, --num-samples >= 1 and --batch-size >= 0")
        for _, path in ckpts:
            if not os.path.isfile(path):
                raise ValueError(f"no checkpoint at {path}: pass the ckpt.pt files written by train.py")
        judge = load_judge(args.judge, args.device)
        result = run_pareto(ckpts, judge, steps, alpha0s, temperatures, top_ps, args.num_samples,
                            args.batch_size or None, args.length or None, args.seed, args.device,
                            on_row=lambda res: write_json(os.path.join(args.out_dir, 'pareto.partial.json'), res))
    except ValueError as e:
        p.exit(2, f"error: {e}\n")
    paths = write_pareto(result, args.out_dir)
    partial = os.path.join(args.out_dir, 'pareto.partial.json')
    if os.path.exists(partial):
        os.remove(partial)
    print('\n' + pareto_table(result) + '\nwrote ' + ', '.join(paths))


if __name__ == '__main__':
    main()
