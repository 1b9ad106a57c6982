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
- `evaluate_checkpoint` (sample.py --eval) and the Pareto pieces that `sweep.py --pareto` calls: `pick_sweep_runs`
  (which checkpoints of a finished sweep), `pareto_settings` (the sampler settings of a family), `run_pareto` (every
  checkpoint over its settings, rows cached in rows.jsonl), `pareto_frontier`, `pareto_table`, `plot_pareto`,
  `write_pareto`, `parse_ckpts`.

    python sample.py --ckpt runs/mdlm/ckpt.pt --eval --judge runs/judge/ckpt.pt --num-samples 64 --steps 16,32,64
    python sweep.py --pareto --judge runs/judge/ckpt.pt                   # a finished `python sweep.py`
    python sweep.py --pareto --judge runs/judge/ckpt.pt --ckpts ar=runs/ar/ckpt.pt,mdlm=runs/mdlm/ckpt.pt \
        --out-dir runs/compare --steps 16,32,64,128,256 --alpha0 1,0.5        # any checkpoints

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
- A sweep's compute-optimal model at a budget is the trained size with the lowest validation loss (the fitted
  optimum N* falls between the grid's sizes and was not trained); the paper plots its compute-optimal models.
"""
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data
from .checkpoint import read_checkpoint
from .common import get_family, load_checkpoint, run_info
from .scaling import fit_isoflop

# -----------------------------------------------------------------------------
# judges: name, key (what the rows cache tells judges apart by), context (tokens per window), bos (id or None),
# encode(text) -> ids, logits(x (B, T), valid) -> fp32


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
        self.key = file_key(path)

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
        self.name = self.key = f"hf:{name}"

    def encode(self, text):
        return self.tokenizer(text, add_special_tokens=False)['input_ids']  # BOS is added per window by judge_nll

    @torch.no_grad()
    def logits(self, x, valid):
        return self.model(input_ids=x, attention_mask=valid.long()).logits.float()


def file_key(path):
    """A file's identity for the rows cache: absolute path, size and modification time (a retrained or replaced
    checkpoint is a new file; a copied one is recomputed, never mistaken for the old one)."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


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
    """rows.jsonl -> {key: row}; a line left half-written by a kill is skipped (its row is measured again)."""
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a') as f:
        f.write(json.dumps(dict(key=json.loads(key), row=row)) + '\n')


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
    with their setting (and checkpoint, where a label has several)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 (matplotlib.ticker below)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels = list(dict.fromkeys(r['label'] for r in result['rows']))
    for i, label in enumerate(labels):
        color = f"C{i}"
        pts = [(r, f) for r, f in zip(result['rows'], result['frontier']) if r['label'] == label]
        several = len({r['ckpt'] for r, _ in pts}) > 1
        ax1.scatter([r['gen_ppl'] for r, _ in pts], [r['tok_s'] for r, _ in pts], color=color, s=14, alpha=0.4)
        front = sorted((r for r, f in pts if f), key=lambda r: r['gen_ppl'])
        ax1.plot([r['gen_ppl'] for r in front], [r['tok_s'] for r in front], '-o', color=color, ms=4, label=label)
        for r in front:
            where = f"{r['size']}@{r['budget']:.2g}" if 'size' in r and 'budget' in r else _checkpoint_name(r)
            ax1.annotate(setting_name(r) + (f" {where}" if several else ''),
                         (r['gen_ppl'], r['tok_s']), fontsize=6, color=color, xytext=(3, 3),
                         textcoords='offset points')
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
