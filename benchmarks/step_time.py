"""Paired, interleaved speed ratios: every family's training step against AR, the AR backbone against a plain GPT,
and the KV-cached samplers (AR against Eso-LM, and today's code against an older commit).

    python benchmarks/step_time.py                       # CPU defaults: ~10 min on a quiet 2-core machine
    python benchmarks/step_time.py --compile --only ar,gpt --skip-sampling     # backbone vs GPT, torch.compile
    python benchmarks/step_time.py --nanogpt micro,d384 --before b9ee023       # AR step vs nanoGPT's exact config

Why paired and interleaved: the machine is shared, so an absolute time says little. Every round runs each
configuration once, in a rotating order, and the ratio is taken inside the round (config time / AR time of the
same round); we report the median ratio over rounds and its spread (25th-75th percentile), which says how noisy
the round-to-round conditions were. Times are CPU time of this process on CPU (`time.process_time`, one thread by
default, so the other core's load does not leak in) and CUDA-event time on GPU.

What is timed:
- training step = zero_grad + family.loss (forward + loss) + backward + AdamW step, random tokens, B x L;
  families: AR, MDLM low-var and NELBO, Duo, Eso-LM alpha0 = 1, Eso-LM alpha0 = 0.5 with batch split 0.5;
- --nanogpt SHAPES: only nanodllm's AR step (ar.loss on Model) against `NanoGPT`, karpathy/nanoGPT's `GPT(bias=False,
  dropout=0)` written below (tied wte = lm_head, learned positions, weight-only LayerNorm, erf GELU, causal SDPA, 4x
  MLP, no bias anywhere; its mean cross-entropy), at 'micro' (d 128, 4 layers, V 257, B 16: train.py's default) and
  'd384' (d 384, 6 layers, 6 heads, V 4096, B 8: nanoGPT's character-level shape; no nanodllm size has it), L 256;
  with --before REV the AR step of that revision joins the rounds; with --gap, three variants of the AR step
  (erf GELU, no rotary, no MLP biases) that say what is left of the gap;
- 'gpt': a plain GPT of the same shape written below as the (older, looser) yardstick (LayerNorm, GELU, causal SDPA,
  learned positions, no adaLN, no rotary, no mask logit), with the same loss (shifted cross-entropy over L-1 targets);
  'gpt' has nanoGPT's exact (erf) GELU, 'gpt tanh' GPT-2's tanh approximation, which the paper's DiT uses (§5);
- sampling: AR + KV cache (L new tokens after BOS, L calls) against Eso-LM + KV cache with alpha0 = 0 (one token
  per call, L calls: the equal-NFE comparison) and with alpha0 = 1, steps = L (fewer calls: empty steps dropped);
- --before REV: the same AR step and samplers from the nanodllm package of git revision REV (extracted to a temporary
  folder and imported as `nanodllm_before`), interleaved with today's code, for a paired before/after ratio.
Results: JSON (--out) and a markdown table on stdout; the recorded ones are in benchmarks/README.md.
"""
import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from nanodllm import ar, duo, eso, mdlm  # noqa: E402
from nanodllm.config import ModelConfig, get_config  # noqa: E402
from nanodllm.model import Model  # noqa: E402

BEFORE_REV = '7a848ed'  # the last commit before issue 10 (speed): the default "before" of the paired comparison
FAMILY_STEPS = {  # name -> (family module, options)
    'ar': (ar, {}),
    'mdlm low_var': (mdlm, {'loss_type': 'low_var'}),
    'mdlm elbo': (mdlm, {'loss_type': 'elbo'}),
    'duo': (duo, {}),
    'eso alpha0=1': (eso, {'alpha0': 1.0}),
    'eso alpha0=0.5 split=0.5': (eso, {'alpha0': 0.5, 'batch_split': 0.5}),
}


# ---------------------------------------------------------------------------------------------- the yardstick
class GPTBlock(nn.Module):
    """A plain pre-LN GPT block of the backbone's shape: LayerNorm, bias-free qkv/out, causal SDPA, 4x GELU MLP
    (gelu='none': the exact erf GELU of nanoGPT; 'tanh': GPT-2's approximation, the one the paper's DiT uses)."""

    def __init__(self, d, n_head, gelu='none'):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate=gelu), nn.Linear(4 * d, d))

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        x = x + self.out(y)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + learned position embeddings, GPTBlocks, final LayerNorm, an untied head with bias (V rows)."""

    def __init__(self, cfg, gelu='none'):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.blocks = nn.ModuleList([GPTBlock(cfg.n_embd, cfg.n_head, gelu) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class NanoGPTBlock(nn.Module):
    """nanoGPT's Block at `GPT(bias=False, dropout=0)`: x + attn(ln_1(x)), then x + mlp(ln_2(x)); weight-only
    LayerNorm, one bias-free c_attn split into q, k, v, causal SDPA, bias-free c_proj; MLP c_fc, erf GELU, c_proj,
    all bias-free (written here after karpathy/nanoGPT model.py, not copied)."""

    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d, bias=False), nn.GELU(), nn.Linear(4 * d, d, bias=False))

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2)
                   for t in self.c_attn(self.ln_1(x)).split(d, dim=2))              # each (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, d))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT at `GPT(bias=False, dropout=0)`, the exact yardstick: token + learned position embeddings,
    NanoGPTBlocks, a weight-only final LayerNorm, a bias-free lm_head tied to the token embedding (wte = lm_head),
    nanoGPT's init (normal 0.02, c_proj 0.02 / sqrt(2 n_layer)). V rows, as the backbone."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size, d)
        self.wpe = nn.Embedding(cfg.seq_len, d)
        self.h = nn.ModuleList([NanoGPTBlock(d, cfg.n_head) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / (2 * cfg.n_layer) ** 0.5 if name.endswith(('c_proj.weight', 'mlp.2.weight')) else 0.02
                    nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def nanogpt_loss(model, x0, **_):
    """nanoGPT's loss on the AR task: inputs x0[:, :-1], targets x0[:, 1:], mean cross-entropy (nanoGPT's
    `F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)`), returned as (sum, count) like the
    families' losses (the step divides by the count)."""
    logits = model(x0[:, :-1])
    n = x0[:, 1:].numel()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), x0[:, 1:].reshape(-1), ignore_index=-1) * n, n


def gpt_loss(model, x0, **_):
    """The AR loss on the yardstick: inputs x0[:, :-1], targets x0[:, 1:], summed cross-entropy."""
    logits = model(x0[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), x0[:, 1:].flatten(), reduction='sum'), x0[:, 1:].numel()


# ---------------------------------------------------------------------------------------------- timing
class Timer:
    """CPU: process CPU time. CUDA: elapsed time between two events (synchronised after the stop)."""

    def __init__(self, device):
        self.cuda = device.type == 'cuda'

    def __call__(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.process_time()
        fn()
        return time.process_time() - t0


def interleaved(fns, timer, min_rounds, max_rounds, seconds, warmup=1):
    """Run every fn once per round, in a rotating order, for at least min_rounds and until `seconds` of wall time
    (or max_rounds). Returns {name: [seconds per round]} (warm-up rounds dropped)."""
    names = list(fns)
    times = {n: [] for n in names}
    for _ in range(warmup):
        for n in names:
            fns[n]()
    t0, r = time.time(), 0
    while r < min_rounds or (r < max_rounds and time.time() - t0 < seconds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(timer(fns[n]))
        r += 1
    return times


def summarize(times, reference):
    """Per-config median time and the median / quartiles of the per-round ratio to `reference`."""
    out = {}
    for name, ts in times.items():
        ratios = sorted(t / r for t, r in zip(ts, times[reference]))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[name] = dict(median_s=statistics.median(ts), ratio=statistics.median(ratios), ratio_q25=q[0],
                         ratio_q75=q[2], rounds=len(ts))
    return out


def table(rows, reference, what='ratio'):
    lines = [f'| config | median time | {what} to {reference} (median) | 25th-75th pct | rounds |',
             '|---|---|---|---|---|']
    for name, s in rows.items():
        lines.append(f"| {name} | {s['median_s'] * 1e3:.1f} ms | {s['ratio']:.3f}x | "
                     f"{s['ratio_q25']:.3f}-{s['ratio_q75']:.3f} | {s['rounds']} |")
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------- set-up
def load_before(rev):
    """The nanodllm package of git revision `rev`, imported as `nanodllm_before` (None if git or rev is missing)."""
    try:
        files = subprocess.run(['git', '-C', ROOT, 'ls-tree', '--name-only', rev, 'nanodllm/'], check=True,
                               capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = tempfile.mkdtemp(prefix='nanodllm_before_')
    os.makedirs(os.path.join(folder, 'nanodllm_before'))
    for f in files:
        if f.endswith('.py'):
            src = subprocess.run(['git', '-C', ROOT, 'show', f'{rev}:{f}'], check=True, capture_output=True).stdout
            with open(os.path.join(folder, 'nanodllm_before', os.path.basename(f)), 'wb') as h:
                h.write(src)
    sys.path.insert(0, folder)
    return {m: importlib.import_module(f'nanodllm_before.{m}') for m in ('model', 'ar', 'eso')}


def randomize(model):
    """Give the zero-initialised adaLN layers and head small random weights (as after some training)."""
    with torch.no_grad():
        for lin in [b.adaLN for b in model.blocks] + [model.adaLN_f, model.head]:
            lin.weight.normal_(0, 0.02)
    return model


def make_step(model, loss_fn, x0, options, compile_model):
    net = torch.compile(model) if compile_model else model
    net.cfg = model.cfg
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        nll, n = loss_fn(net, x0, train=True, **options)
        (nll / n).backward()
        opt.step()
    return step


def step_comparison(args, size, V, timer, before):
    cfg = get_config(size, V, args.seq_len)
    x0 = torch.randint(0, V - 1, (args.batch_size, args.seq_len), device=args.device)
    steps = {}
    for name, (family, options) in FAMILY_STEPS.items():
        if not args.only or name.split()[0] in args.only:
            torch.manual_seed(0)
            steps[name] = make_step(Model(cfg).to(args.device), family.loss, x0, options, args.compile)
    if not args.only or 'gpt' in args.only:
        for name, gelu in (('gpt', 'none'), ('gpt tanh', 'tanh')):
            torch.manual_seed(0)
            steps[name] = make_step(GPT(cfg, gelu).to(args.device), gpt_loss, x0, {}, args.compile)
    if before is not None and (not args.only or 'ar' in args.only):
        torch.manual_seed(0)
        steps['ar (before)'] = make_step(before['model'].Model(cfg).to(args.device), before['ar'].loss, x0, {},
                                         args.compile)
    times = interleaved(steps, timer, args.min_rounds, args.max_rounds, args.seconds,
                        warmup=3 if args.compile else 1)
    reference = 'ar' if 'ar' in steps else 'gpt'
    result = dict(size=size, vocab_size=V, batch_size=args.batch_size, seq_len=args.seq_len, reference=reference,
                  rows=summarize(times, reference))
    for gpt in ('gpt', 'gpt tanh'):  # the backbone against the yardsticks
        if gpt in steps and 'ar' in steps:
            result[f'ar_over_{gpt.replace(" ", "_")}'] = summarize({'ar': times['ar'], gpt: times[gpt]}, gpt)['ar']
    return result


NANOGPT_SHAPES = {  # name -> (ModelConfig, batch size) of the AR step against nanoGPT (issue 21)
    'micro': (ModelConfig(vocab_size=257, n_layer=4, n_head=4, n_embd=128, seq_len=256), 16),  # train.py's default
    'd384': (ModelConfig(vocab_size=4096, n_layer=6, n_head=6, n_embd=384, seq_len=256), 8),   # nanoGPT char-level
}


def nanogpt_comparison(args, shape, timer, before):
    """nanodllm's AR step (ar.loss on Model) against nanoGPT's exact configuration (NanoGPT), paired rounds."""
    cfg, B = NANOGPT_SHAPES[shape]
    x0 = torch.randint(0, cfg.vocab_size - 1, (B, cfg.seq_len), device=args.device)
    torch.manual_seed(0)
    steps = {'ar': make_step(Model(cfg).to(args.device), ar.loss, x0, {}, args.compile)}
    torch.manual_seed(0)
    steps['nanogpt'] = make_step(NanoGPT(cfg).to(args.device), nanogpt_loss, x0, {}, args.compile)
    if before is not None:
        torch.manual_seed(0)
        steps['ar (before)'] = make_step(before['model'].Model(cfg).to(args.device), before['ar'].loss, x0, {},
                                         args.compile)
    if args.gap:  # what is left: the AR step without each of the paper's choices that nanoGPT lacks
        for name in GAP_VARIANTS:
            torch.manual_seed(0)
            steps[name] = gap_variant(name, Model(cfg).to(args.device), x0, args.compile)
    times = interleaved(steps, timer, args.min_rounds, args.max_rounds, args.seconds,
                        warmup=3 if args.compile else 1)
    result = dict(shape=shape, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, vocab_size=cfg.vocab_size,
                  batch_size=B, seq_len=cfg.seq_len, reference='nanogpt', rows=summarize(times, 'nanogpt'))
    if before is not None:
        result['before_over_after'] = summarize({'ar (before)': times['ar (before)'], 'ar': times['ar']},
                                                'ar')['ar (before)']
    return result


GAP_VARIANTS = ('ar, erf GELU', 'ar, no rotary', 'ar, no MLP biases')


def gap_variant(name, model, x0, compile_model):
    """The AR step of a model variant that differs from the paper's backbone in one thing nanoGPT lacks (for the
    gap analysis only; these are not models anyone trains): nanoGPT's erf GELU, no rotary (apply_rotary is the
    identity during the step), or no MLP biases."""
    import nanodllm.model as backbone
    if name == 'ar, erf GELU':
        for b in model.blocks:
            b.mlp[1] = nn.GELU()
    if name == 'ar, no MLP biases':
        for b in model.blocks:
            b.mlp[0].bias = b.mlp[2].bias = None
    step = make_step(model, ar.loss, x0, {}, compile_model)
    if name != 'ar, no rotary':
        return step

    def without_rotary():
        apply_rotary, backbone.apply_rotary = backbone.apply_rotary, lambda x, cos, sin: x
        try:
            step()
        finally:
            backbone.apply_rotary = apply_rotary
    return without_rotary


def sampling_comparison(args, L, timer, before):
    cfg = get_config(args.sample_size, args.vocab_sizes[0], L)
    torch.manual_seed(0)
    model = randomize(Model(cfg)).to(args.device).eval()
    n, bos = args.num_samples, torch.tensor([0])
    g = lambda: torch.Generator(args.device).manual_seed(0)  # noqa: E731
    runs = {
        'ar+kv': lambda: ar.sample(model, n, L + 1, prompt=bos, generator=g()),
        'eso+kv alpha0=0': lambda: eso.sample(model, n, L, alpha0=0.0, generator=g()),
        f'eso+kv alpha0=1 steps={L}': lambda: eso.sample(model, n, L, steps=L, alpha0=1.0, generator=g()),
    }
    if before is not None:
        old = before['model'].Model(cfg).to(args.device).eval()
        old.load_state_dict(model.state_dict())
        runs['ar+kv (before)'] = lambda: before['ar'].sample(old, n, L + 1, prompt=bos, generator=g())
        runs['eso+kv alpha0=0 (before)'] = lambda: before['eso'].sample(old, n, L, alpha0=0.0, generator=g())
    with torch.no_grad():
        times = interleaved(runs, timer, args.sample_rounds, args.sample_rounds, 0)
    return dict(size=args.sample_size, vocab_size=cfg.vocab_size, length=L, num_samples=n, reference='ar+kv',
                rows=summarize(times, 'ar+kv'))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', default='micro,small', help="comma-separated model sizes for the training steps ('' = "
                                                          "no training steps)")
    p.add_argument('--vocab-sizes', default='2048', help='comma-separated V (mask included), e.g. 2048,50258')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--seq-len', type=int, default=256)
    p.add_argument('--only', default='', help='subset of configs: ar,mdlm,duo,eso,gpt (default: all)')
    p.add_argument('--compile', action='store_true', help='torch.compile every model (slow start: ~30 s each on CPU)')
    p.add_argument('--min-rounds', type=int, default=5)
    p.add_argument('--max-rounds', type=int, default=40)
    p.add_argument('--seconds', type=float, default=90, help='wall-clock budget per (size, V) after min-rounds')
    p.add_argument('--nanogpt', default='', help="comma-separated shapes (micro, d384) of the AR step against "
                                                     "nanoGPT's exact configuration; only that is run")
    p.add_argument('--gap', action='store_true', help="with --nanogpt: also time the AR step with erf GELU, without "
                                                      "rotary, without MLP biases (what is left)")
    p.add_argument('--skip-sampling', action='store_true')
    p.add_argument('--sample-size', default='micro')
    p.add_argument('--sample-lengths', default='256,1024')
    p.add_argument('--num-samples', type=int, default=8)
    p.add_argument('--sample-rounds', type=int, default=5)
    p.add_argument('--before', default=BEFORE_REV, help="git revision for the paired before/after ('' = off)")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=1, help='torch threads on CPU (1: CPU time is not diluted by '
                                                          'waiting for a busy second core)')
    p.add_argument('--out', default='', help='write the results to this JSON file')
    args = p.parse_args()
    args.only = [s for s in args.only.split(',') if s]
    args.vocab_sizes = [int(v) for v in args.vocab_sizes.split(',')]
    device = torch.device(args.device)
    if device.type == 'cpu':
        torch.set_num_threads(args.threads)
    timer = Timer(device)
    before = load_before(args.before) if args.before else None
    if args.before and before is None:
        print(f"(git revision {args.before!r} not found: no before/after comparison)")
    info = dict(device=torch.cuda.get_device_name() if device.type == 'cuda'
                else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)',
                torch=torch.__version__, timer='CUDA events' if device.type == 'cuda' else 'time.process_time',
                compile=args.compile, before=args.before if before else None, args=vars(args))
    print(json.dumps(info))
    results = dict(info=info, steps=[], sampling=[])
    t0 = time.time()
    if args.nanogpt:
        results['nanogpt'] = []
        for shape in args.nanogpt.split(','):
            r = nanogpt_comparison(args, shape, timer, before)
            results['nanogpt'].append(r)
            print(f"\n### AR step / nanoGPT, {shape}: d {r['n_embd']}, {r['n_layer']} layers, V = {r['vocab_size']}, "
                  f"B = {r['batch_size']}, L = {r['seq_len']} ({time.time() - t0:.0f} s so far)\n")
            print(table(r['rows'], 'nanogpt'))
            if 'before_over_after' in r:
                s = r['before_over_after']
                print(f"\nAR before / AR after: {s['ratio']:.3f}x ({s['ratio_q25']:.3f}-{s['ratio_q75']:.3f})")
        args.sizes, args.skip_sampling = '', True
    for size in [s for s in args.sizes.split(',') if s]:
        for V in args.vocab_sizes:
            r = step_comparison(args, size, V, timer, before)
            results['steps'].append(r)
            print(f"\n### training step, size {size}, V = {V}, B = {args.batch_size}, L = {args.seq_len}"
                  f"{', compiled' if args.compile else ''} ({time.time() - t0:.0f} s so far)\n")
            print(table(r['rows'], r['reference']))
            for gpt in ('gpt', 'gpt_tanh'):
                if f'ar_over_{gpt}' in r:
                    s = r[f'ar_over_{gpt}']
                    print(f"\nAR backbone / plain GPT ({gpt}): {s['ratio']:.3f}x "
                          f"({s['ratio_q25']:.3f}-{s['ratio_q75']:.3f})")
    if not args.skip_sampling:
        for L in [int(x) for x in args.sample_lengths.split(',')]:
            r = sampling_comparison(args, L, timer, before)
            results['sampling'].append(r)
            print(f"\n### sampling, size {r['size']}, V = {r['vocab_size']}, L = {L}, {r['num_samples']} samples "
                  f"({time.time() - t0:.0f} s so far)\n")
            print(table(r['rows'], 'ar+kv', 'time'))
    results['info']['seconds'] = time.time() - t0
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    print(f"\ndone in {time.time() - t0:.0f} s")


if __name__ == '__main__':
    main()
