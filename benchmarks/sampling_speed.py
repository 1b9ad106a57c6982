"""Sampling speed of every family on one model size, with and without caches (wall-clock, median of repeats).

    python benchmarks/sampling_speed.py --size micro --length 256 --num-samples 8      # ~3 min on 2 CPU cores

The weights are random (the zero-initialised layers are given random values): the time of a sampler does not
depend on what the model has learned, and the unmask schedules do not depend on the weights either. Prints a
markdown table; the recorded results are in benchmarks/README.md.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a plain checkout too
from nanodllm import ar, duo, eso, mdlm  # noqa: E402
from nanodllm.config import get_config  # noqa: E402
from nanodllm.model import Model  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--size', default='micro')
p.add_argument('--vocab-size', type=int, default=257, help='257 = byte tokenizer + mask')
p.add_argument('--length', type=int, default=256)
p.add_argument('--num-samples', type=int, default=8)
p.add_argument('--repeats', type=int, default=1)
p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
p.add_argument('--json', default='', help='also write the rows to this file')
args = p.parse_args()

torch.manual_seed(0)
model = Model(get_config(args.size, args.vocab_size, args.length)).to(args.device).eval()
with torch.no_grad():
    for lin in [b.adaLN for b in model.blocks] + [model.adaLN_f, model.head]:
        lin.weight.normal_(0, 0.02)
L, n = args.length, args.num_samples
bos = torch.tensor([0])
runs = [  # (name, function returning (x, nfe))
    ('ar, KV cache', lambda g: ar.sample(model, n, L + 1, prompt=bos, generator=g)),  # L new tokens after BOS
    ('ar, no cache', lambda g: ar.sample(model, n, L + 1, prompt=bos, generator=g, use_cache=False)),
    ('eso alpha0=0 (one token per call), KV cache', lambda g: eso.sample(model, n, L, alpha0=0.0, generator=g)),
    ('eso alpha0=0 (one token per call), no cache',
     lambda g: eso.sample(model, n, L, alpha0=0.0, generator=g, use_cache=False)),
    (f'eso alpha0=1, steps={L}, KV cache', lambda g: eso.sample(model, n, L, steps=L, alpha0=1.0, generator=g)),
    (f'eso alpha0=1, steps={L}, no cache',
     lambda g: eso.sample(model, n, L, steps=L, alpha0=1.0, generator=g, use_cache=False)),
    (f'mdlm steps={L}, no-change cache', lambda g: mdlm.sample(model, n, L, steps=L, generator=g)),
    (f'mdlm steps={L}, no cache', lambda g: mdlm.sample(model, n, L, steps=L, generator=g, use_cache=False)),
    (f'duo steps={L}', lambda g: duo.sample(model, n, L, steps=L, generator=g)),
]


def timed(fn):
    times, nfe = [], None
    for r in range(args.repeats):
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, nfe = fn(torch.Generator(args.device).manual_seed(r))
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), nfe


ar.sample(model, n, 8, prompt=bos)  # warm-up (allocator, kernels)
rows = []
for name, fn in runs:
    seconds, nfe = timed(fn)
    rows.append(dict(sampler=name, nfe=nfe, seconds=seconds, tokens_per_second=n * L / seconds))
    print(f"{name}: {nfe} calls, {seconds:.2f}s", flush=True)
ar_time = rows[0]['seconds']
device = torch.cuda.get_device_name() if args.device.startswith('cuda') else f'{platform.processor() or "cpu"}, ' \
    f'{torch.get_num_threads()} threads'
print(f"size {args.size}, L = {L}, {n} samples, V = {args.vocab_size}, {device}, torch {torch.__version__}\n")
print('| sampler | NFE | seconds | tokens/s | time / AR with KV cache |\n|---|---|---|---|---|')
for r in rows:
    print(f"| {r['sampler']} | {r['nfe']} | {r['seconds']:.2f} | {r['tokens_per_second']:,.0f} | "
          f"{r['seconds'] / ar_time:.2f}x |")
if args.json:
    with open(args.json, 'w') as f:
        json.dump(dict(args=vars(args), device=device, rows=rows), f, indent=2)
