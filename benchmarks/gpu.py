"""GPU benchmark: training tokens/s, MFU and peak memory per family, and the memory planner's prediction beside it.

    python benchmarks/gpu.py                                   # one GPU, both parts below (~30-40 min on an H100)
    python benchmarks/gpu.py --parts 350m --families ar,mdlm   # a subset
    torchrun --standalone --nproc_per_node=8 benchmarks/gpu.py --fsdp --parts 1.7b   # FSDP2 over 8 GPUs
    python benchmarks/gpu.py --cpu-smoke --out-dir /tmp/b      # the same code path on CPU, tiny, seconds (tested)

Parts:
- 350m: size 336M (351M parameters with the GPT-2 vocabulary), L = 1024, micro-batch 8, bf16 autocast, eager and
  torch.compile'd: the throughput and MFU of every family;
- 1.7b: size 1.7b, L = 2048, micro-batch 1, 2, 4, 8, without and with activation checkpointing, eager: peak memory
  against the planner and the largest micro-batch that fits (out of memory is caught and recorded).
Families: ar, mdlm, duo, eso (alpha0 = 1) and eso-seq (alpha0 = 0.5, batch-split 0.5: the sequential part too).

Each configuration runs the package's own pieces (parallel.wrap_model, the family's loss, parallel.clip_grad_norm_,
fused AdamW, nanodllm.memory.plan), as train.py does, on random tokens: speed and memory do not depend on the
text. One optimizer step = one micro-batch. t is drawn near 1 (the last stratum of a large batch), so Eso-LM masks
nearly every token: the worst case, which the planner plans for. Peak memory is torch.cuda.max_memory_allocated
over the timed steps (optimizer states included); on CPU, the live-tensor tracker of nanodllm/memory.py plus the
weights and AdamW states that already exist. MFU = 3 F tokens/s / (peak FLOP/s x GPUs), F from nanodllm/flops.py.

Writes <out-dir>/gpu_<device>.json and gpu_<device>.md (default out-dir: benchmarks/results).
"""
import argparse
import gc
import json
import os
import re
import sys
import time

import torch
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from nanodllm import flops, memory, parallel  # noqa: E402
from nanodllm.common import autocast_context, exit_process, init_distributed, run_info  # noqa: E402
from nanodllm.families import get_family  # noqa: E402
from nanodllm.config import get_config  # noqa: E402
from nanodllm.model import Model  # noqa: E402

FAMILIES = {'ar': ('ar', {}), 'mdlm': ('mdlm', {}), 'duo': ('duo', {}), 'eso': ('eso', {}),
            'eso-seq': ('eso', {'alpha0': 0.5, 'batch_split': 0.5})}
PARTS = {  # name -> size, seq_len, micro-batch sizes, compile settings, checkpointing settings
    '350m': dict(size='336M', seq_len=1024, micro=[8], compile=[False, True], checkpointing=[False]),
    '1.7b': dict(size='1.7b', seq_len=2048, micro=[1, 2, 4, 8], compile=[False], checkpointing=[False, True]),
    'cpu': dict(size='nano', seq_len=32, micro=[2, 4], compile=[False], checkpointing=[False, True]),
}

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--parts', default='350m,1.7b', help=f"comma-separated: {', '.join(PARTS)}")
p.add_argument('--families', default=','.join(FAMILIES), help=f"comma-separated: {', '.join(FAMILIES)}")
p.add_argument('--micro-batch-sizes', default='', help='override the parts\' micro-batch sizes, e.g. 1,2')
p.add_argument('--vocab', type=int, default=50258, help='vocabulary incl. the mask token (GPT-2 + 1)')
p.add_argument('--fsdp', action='store_true', help='FSDP2 (one process: a 1-rank group, bf16 gathered weights)')
p.add_argument('--warmup', type=int, default=2, help='untimed steps (compiled runs: +2)')
p.add_argument('--steps', type=int, default=5, help='timed steps')
p.add_argument('--cpu-smoke', action='store_true', help='part cpu on the CPU in fp32, 257-token vocabulary')
p.add_argument('--out-dir', default=os.path.join(ROOT, 'benchmarks', 'results'))
args = p.parse_args()
if args.cpu_smoke:
    args.parts, args.vocab, args.warmup, args.steps = 'cpu', 257, 1, 2

# -----------------------------------------------------------------------------
# processes and device
if args.fsdp and 'RANK' not in os.environ:  # FSDP needs a process group, also for one GPU
    os.environ.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='29511')
_, rank, _, world, device = init_distributed('cpu' if args.cpu_smoke else 'auto')
if device.type != 'cuda' and not args.cpu_smoke:
    p.exit(2, "error: no GPU here: run on a GPU machine, or pass --cpu-smoke for the tiny CPU run\n")
dtype = 'float32' if device.type == 'cpu' else 'bfloat16'
autocast = autocast_context(device, dtype)
if device.type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
peak_flops = flops.peak_flops(device)
info = run_info(device)


def log(*a):
    if rank == 0:
        print(*a, flush=True)


def measured_step_memory(fn):
    """Run fn() -> (its result, peak bytes allocated meanwhile, counting what existed before)."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated(device)
    existing = sum(t.nbytes for t in existing_tensors())
    with memory.LiveTensors() as tracker:
        out = fn()
    return out, existing + tracker.peak


def existing_tensors():
    """CPU: the weights, gradients and AdamW states alive between steps (FSDP: this rank's shards)."""
    local = lambda t: t.to_local() if isinstance(t, torch.distributed.tensor.DTensor) else t  # noqa: E731
    yield from (local(q) for q in state['raw_model'].parameters())
    yield from (local(q.grad) for q in state['raw_model'].parameters() if q.grad is not None)
    yield from (local(t) for s in state['optimizer'].state.values() for t in s.values() if torch.is_tensor(t))


state = {}


def run_config(part, family_name, micro, compile_model, checkpointing):
    """Build, warm up and time one configuration -> a result row (dict)."""
    spec = PARTS[part]
    family_key, options = FAMILIES[family_name]
    family = get_family(family_key)
    cfg = get_config(spec['size'], args.vocab, spec['seq_len'])
    L = spec['seq_len']
    planned = memory.plan(cfg, family_key, micro, L, options, nproc=world, fsdp=args.fsdp, dtype=dtype,
                          activation_checkpointing=checkpointing)
    row = dict(part=part, family=family_name, size=spec['size'], seq_len=L, micro_batch_size=micro,
               compile=compile_model, activation_checkpointing=checkpointing, fsdp=args.fsdp, world_size=world,
               dtype=dtype, planned_bytes=planned['total'], planned=planned,
               planned_fits=memory.fits(planned['total'], total_memory()) if device.type == 'cuda' else None)
    try:
        torch.manual_seed(0)
        raw_model = Model(cfg).to(device)
        raw_model.activation_checkpointing = checkpointing
        model = parallel.wrap_model(raw_model, device, fsdp=args.fsdp, compile=compile_model, dtype=dtype)
        model.cfg = cfg
        optimizer = torch.optim.AdamW(raw_model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                      fused=device.type == 'cuda')
        state.update(raw_model=raw_model, optimizer=optimizer)
        gen = torch.Generator(device).manual_seed(rank)

        def step():
            x0 = torch.randint(0, cfg.vocab_size - 1, (micro, L), device=device, generator=gen)
            with autocast:  # t near 1: the stratum of a 1000-row batch with the most masks (the planner's worst case)
                nll, n = family.loss(model, x0, train=True, strata=(999, 1000),
                                     generator=torch.Generator().manual_seed(0), **options)
            (nll / n).backward()
            parallel.clip_grad_norm_(model, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(args.warmup + (2 if compile_model else 0)):
            step()
        t0 = time.perf_counter()
        _, peak = measured_step_memory(lambda: [step() for _ in range(args.steps)])
        dt = (time.perf_counter() - t0) / args.steps
        peak = torch.tensor(float(peak), device=device)
        if world > 1:
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        tokens_per_s = micro * L * world / dt
        row.update(status='ok', step_seconds=dt, tokens_per_second=tokens_per_s,
                   mfu=3 * flops.forward_flops_per_token(cfg) * tokens_per_s / (peak_flops * world),
                   peak_bytes=int(peak.item()), planned_over_measured=planned['total'] / peak.item())
    except torch.OutOfMemoryError:
        row.update(status='OOM')
    finally:
        state.clear()
        model = raw_model = optimizer = None  # noqa: F841
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        if compile_model:
            torch._dynamo.reset()
    return row


def total_memory():
    return torch.cuda.get_device_properties(device).total_memory


def table(rows):
    """Markdown table of the result rows."""
    out = ['| part | family | micro-batch | compile | ckpt | tokens/s | MFU | peak GB | planned GB | planned/peak |',
           '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        ok = r['status'] == 'ok'
        out.append(f"| {r['part']} | {r['family']} | {r['micro_batch_size']} | {'on' if r['compile'] else 'off'} | "
                   f"{'on' if r['activation_checkpointing'] else 'off'} | "
                   + (f"{r['tokens_per_second']:,.0f} | {100 * r['mfu']:.1f}% | {r['peak_bytes'] / 1e9:.2f} | "
                      if ok else f"{r['status']} | | | ")
                   + f"{r['planned_bytes'] / 1e9:.2f} | " + (f"{r['planned_over_measured']:.3f} |" if ok else " |"))
    return '\n'.join(out)


rows = []
bad = [n for n in args.families.split(',') if n not in FAMILIES] + [n for n in args.parts.split(',') if n not in PARTS]
if bad:
    p.exit(2, f"error: unknown part or family {bad}: parts {', '.join(PARTS)}; families {', '.join(FAMILIES)}\n")
log(f"{info['device']} | torch {info['torch']} | {world} process(es) | {dtype} | peak {peak_flops:.3g} FLOP/s"
    + (' (measured fp32 matmul)' if device.type == 'cpu' else ''))
for part in args.parts.split(','):
    spec = PARTS[part]
    micros = [int(m) for m in args.micro_batch_sizes.split(',')] if args.micro_batch_sizes else spec['micro']
    for family_name in args.families.split(','):
        for compile_model in spec['compile']:
            for checkpointing in spec['checkpointing']:
                for micro in micros:
                    if family_name == 'eso-seq' and micro < 2:
                        continue  # both Eso-LM parts need a row each
                    row = run_config(part, family_name, micro, compile_model, checkpointing)
                    rows.append(row)
                    log(table([row]).splitlines()[-1])

if rank == 0:
    slug = re.sub(r'[^a-z0-9]+', '_', info['device'].lower()).strip('_') if device.type == 'cuda' else 'cpu'
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, f'gpu_{slug}')
    with open(path + '.json', 'w') as f:
        json.dump(dict(run=info, peak_flops=peak_flops, world_size=world, fsdp=args.fsdp, args=vars(args),
                       rows=rows), f, indent=2)
    with open(path + '.md', 'w') as f:
        f.write(f"{info['device']}, torch {info['torch']}, {world} process(es), {dtype}\n\n{table(rows)}\n")
    print(f"\n{table(rows)}\n\nwrote {path}.json and {path}.md")
exit_process(0)  # leaves the process group (if any) first
