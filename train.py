"""Train any nanodllm family, from a laptop CPU to a multi-GPU node, with one code path.

    python train.py                                              # AR, tiny model, Shakespeare bytes, CPU, ~5 min
    python train.py --family mdlm --loss elbo --flops 3e14        # MDLM on the NELBO, steps from a FLOP budget
    torchrun --standalone --nproc_per_node=8 train.py --family eso --size 1.7b --tokenizer gpt2 \
        --seq-len 2048 --batch-size 256 --micro-batch-size 8 --lr 2e-4 --compile

Reads straight down: args -> processes -> data -> model -> optimizer and schedule -> loop -> results.json.
"""
import argparse
import json
import math
import os
import time
from dataclasses import asdict

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanodllm import data, flops
from nanodllm.common import (FAMILY_NAMES, autocast_context, cleanup_distributed, get_family, init_distributed,
                             load_checkpoint, make_checkpoint, print0, resolve_dtype, run_info, save_checkpoint)
from nanodllm.config import SIZES, get_config
from nanodllm.model import Model

# -----------------------------------------------------------------------------
# arguments
p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
# what to train
p.add_argument('--family', default='ar', help=f"model family: {' | '.join(FAMILY_NAMES)}")
p.add_argument('--size', default='micro', help=f"model size: {' | '.join(SIZES)}")
p.add_argument('--loss', dest='loss_type', default=None,
               help="mdlm/eso training loss: low_var (the paper's cross-entropy, default) | elbo (the NELBO); "
                    "validation always reports the NELBO")
p.add_argument('--alpha0', type=float, default=None, help='eso: alpha_0 in [0, 1]; 1 = masked diffusion, 0 = AR')
p.add_argument('--batch-split', type=float, default=None,
               help='eso: fraction of each batch on the diffusion loss, the rest on the sequential loss')
# data
p.add_argument('--data', default='shakespeare', help="'shakespeare' (bundled), a .txt file or a folder of .txt files")
p.add_argument('--tokenizer', default='byte', help='byte (256 ids, fast on CPU) | gpt2 (50257 ids, tiktoken offline)')
p.add_argument('--seq-len', type=int, default=256, help='context length L in tokens')
p.add_argument('--batch-size', default='16',
               help="total batch per optimizer step over all processes: sequences (e.g. 256), or tokens with a "
                    "'tok' suffix (e.g. 524288tok); gradient accumulation makes up the difference")
p.add_argument('--micro-batch-size', type=int, default=0, help='sequences per process per forward (0: batch / world)')
# how long
p.add_argument('--max-steps', type=int, default=1500, help='optimizer steps (ignored if --flops is set)')
p.add_argument('--flops', type=float, default=0, help='training FLOP budget: steps = flops / (3 F tokens_per_step)')
# optimizer: AdamW with warmup + cosine (spec §6.3)
p.add_argument('--lr', type=float, default=1e-3, help="peak learning rate (the paper's runs: 2e-4)")
p.add_argument('--min-lr', type=float, default=None, help='final learning rate (default: lr / 10)')
p.add_argument('--warmup-steps', type=int, default=-1, help='-1: max(1%% of steps, 100), at most 10%% of steps')
p.add_argument('--weight-decay', type=float, default=0.1, help='AdamW weight decay, on all parameters as the paper')
p.add_argument('--beta1', type=float, default=0.9)
p.add_argument('--beta2', type=float, default=0.95)
p.add_argument('--grad-clip', type=float, default=1.0, help='clip the gradient norm (0: off)')
# evaluation, logging, checkpoints
p.add_argument('--eval-every', type=int, default=250, help='validate (and checkpoint) every N steps')
p.add_argument('--eval-batches', type=int, default=20, help='validation batches per evaluation')
p.add_argument('--sample-every', type=int, default=0, help='print a sample every N steps (0: only at the end)')
p.add_argument('--log-every', type=int, default=1, help='print a log line every N steps')
p.add_argument('--out-dir', default='out', help='where ckpt.pt, log.txt and results.json go')
p.add_argument('--resume', action='store_true',
               help='continue from <out-dir>/ckpt.pt (same model, data and family flags); weights, optimizer and data '
                    'position are restored, the masking noise of diffusion families is drawn afresh')
# system
p.add_argument('--device', default='auto', help='auto | cpu | cuda | mps')
p.add_argument('--dtype', default='auto', help='auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16')
p.add_argument('--compile', action='store_true', help='torch.compile the model (worth it on GPU; slow start on CPU)')
p.add_argument('--seed', type=int, default=1)
args = p.parse_args()

try:  # bad names fail here with one line, before any work
    family = get_family(args.family)
    get_config(args.size, 2, args.seq_len)
except ValueError as e:
    p.exit(2, f"error: {e}\n")
options = {k: (getattr(args, k) if getattr(args, k, None) is not None else v) for k, v in family.OPTIONS.items()}
FAMILY_FLAGS = {'loss_type': '--loss', 'alpha0': '--alpha0', 'batch_split': '--batch-split'}
for k, flag in FAMILY_FLAGS.items():
    if getattr(args, k) is not None and k not in options:
        p.exit(2, f"error: {flag} does not apply to --family {args.family}\n")

# -----------------------------------------------------------------------------
# processes, devices, seeds
ddp, rank, local_rank, world, device = init_distributed(args.device)
master = rank == 0
dtype = resolve_dtype(args.dtype, device)
autocast = autocast_context(device, dtype)
torch.manual_seed(args.seed + rank)  # masks and noise differ per rank; t strata are shared (see noise.sample_t)
if device.type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

# -----------------------------------------------------------------------------
# data
if master:
    meta = data.prepare(args.data, args.tokenizer)
if ddp:
    torch.distributed.barrier()  # rank 0 tokenizes once; the others read what it wrote
meta = data.prepare(args.data, args.tokenizer) if not master else meta
tokenizer = data.get_tokenizer(args.tokenizer)
bs = args.batch_size
batch_size = int(bs[:-3]) // args.seq_len if bs.endswith('tok') else int(bs)  # global sequences per step
if bs.endswith('tok') and int(bs[:-3]) % args.seq_len:
    p.exit(2, f"error: --batch-size {bs} is not a multiple of --seq-len {args.seq_len}\n")
micro = args.micro_batch_size or batch_size // world
if micro < 1 or batch_size % (micro * world):
    p.exit(2, f"error: --batch-size {batch_size} must be a multiple of --micro-batch-size {micro} x {world} "
              f"processes\n")
grad_accum = batch_size // (micro * world)
tokens_per_step = batch_size * args.seq_len
try:  # data shorter than one batch fails here, with the numbers and the fix
    train_loader = data.Loader(os.path.join(meta['out_dir'], 'train.bin'), micro, args.seq_len, rank, world,
                               seed=args.seed, device=device)
    data.eval_batches(os.path.join(meta['out_dir'], 'val.bin'), micro, args.seq_len, rank, world)
except ValueError as e:
    p.exit(2, f"error: {e}\n")

# -----------------------------------------------------------------------------
# model
cfg = get_config(args.size, tokenizer.n_vocab + 1, args.seq_len)  # +1: the mask token is the last id
torch.manual_seed(args.seed)  # identical initial weights on every rank
model = Model(cfg).to(device)
torch.manual_seed(args.seed + rank)
flops_per_token = flops.forward_flops_per_token(cfg)
max_steps = flops.steps_for_budget(args.flops, cfg, tokens_per_step) if args.flops else args.max_steps
if max_steps < 1:
    p.exit(2, f"error: --flops {args.flops:g} buys less than one step of {3 * flops_per_token * tokens_per_step:.3g}"
              f" FLOPs: raise it or shrink --size/--batch-size\n")
warmup = args.warmup_steps if args.warmup_steps >= 0 else min(max(round(0.01 * max_steps), 100), max_steps // 10)
min_lr = args.lr / 10 if args.min_lr is None else args.min_lr
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8,
                              weight_decay=args.weight_decay, fused=device.type == 'cuda')
start_step, best_val = 0, None
ckpt_path = os.path.join(args.out_dir, 'ckpt.pt')
if args.resume:
    _, ckpt = load_checkpoint(ckpt_path, device)
    for k in ('family', 'size', 'seq_len', 'tokenizer', 'data', 'batch_size', 'seed'):
        if ckpt['args'][k] != getattr(args, k):
            p.exit(2, f"error: --resume: --{k.replace('_', '-')} is {getattr(args, k)!r} but the checkpoint was "
                      f"trained with {ckpt['args'][k]!r}; pass the same value\n")
    if ckpt['options'] != options:
        p.exit(2, f"error: --resume: family options {options} differ from the checkpoint's {ckpt['options']}\n")
    model.load_state_dict(ckpt['model'])
    optimizer.load_state_dict(ckpt['optimizer'])
    train_loader.load_state_dict(ckpt['loader'])  # every rank's loader is at the same (epoch, step)
    start_step, best_val = ckpt['step'], ckpt.get('val_loss')
raw_model = model  # uncompiled, unwrapped: used to save, evaluate and sample
if args.compile:
    t0 = time.time()
    model = torch.compile(model)
    print0(f"torch.compile wrapped the model (the first steps pay the compilation, {time.time() - t0:.1f}s so far)")
if ddp:
    model = DDP(model, device_ids=[local_rank] if device.type == 'cuda' else None)
model.cfg = cfg  # families read model.cfg (mask id, vocabulary) through the compile/DDP wrappers too


def get_lr(step):
    """Warmup then cosine to min_lr (spec §6.3 WarmupCosineLR)."""
    if step < warmup:                                                 # 1) linear warmup
        return args.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))  # 2) cosine decay ...
    return min_lr + (args.lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))  # 3) ... to min_lr


@torch.no_grad()
def evaluate():
    """Validation loss per token over --eval-batches batches: NLL for AR, the NELBO for diffusion families (never
    low-var). Sums are all-reduced before dividing (spec §7.1). Masks and t are re-seeded, so every evaluation of
    every run sees the same noise: curves are comparable step to step and family to family."""
    raw_model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        torch.manual_seed(1234 + rank)
        batches = data.eval_batches(os.path.join(meta['out_dir'], 'val.bin'), micro, args.seq_len, rank, world,
                                    max_batches=args.eval_batches, device=device)
        for i, x in enumerate(batches):
            with autocast:
                nll, n = family.loss(raw_model, x, train=False, generator=torch.Generator().manual_seed(i), **options)
            total += torch.stack([nll.double(), torch.as_tensor(n, dtype=torch.float64, device=device)])
    if ddp:
        torch.distributed.all_reduce(total)
    raw_model.train()
    return (total[0] / total[1]).item()


def show_sample(step):
    raw_model.eval()
    prompt = torch.tensor([tokenizer.bos]) if getattr(family, 'BOS_PREFIX', False) else None
    x, nfe = family.sample(raw_model, 1, min(args.seq_len, 256), steps=64, prompt=prompt,
                           generator=torch.Generator(device).manual_seed(args.seed))
    raw_model.train()
    tqdm.write(f"--- sample at step {step} ({nfe} network calls) ---\n{tokenizer.decode(x[0].tolist())}\n---")


# -----------------------------------------------------------------------------
# log the set-up
info = run_info(device)
n_params = raw_model.num_params()
peak = flops.peak_flops(device)
os.makedirs(args.out_dir, exist_ok=True)
log_file = open(os.path.join(args.out_dir, 'log.txt'), 'a') if master else None


def log(line):
    if master:
        tqdm.write(line)
        log_file.write(line + '\n')
        log_file.flush()


log(f"run: {json.dumps(info)}\nargs: {json.dumps(vars(args))}\nmodel: {json.dumps(asdict(cfg))}")
log(f"family {args.family} {options} | {n_params / 1e6:.2f}M non-embedding params | {world} process(es) on "
    f"{device} ({dtype}) | batch {batch_size} x {args.seq_len} = {tokens_per_step:,} tokens/step = {micro} x "
    f"{world} x {grad_accum} accumulation | {max_steps} steps, {3 * flops_per_token * tokens_per_step * max_steps:.3g}"
    f" FLOPs | warmup {warmup} | peak {peak:.3g} FLOP/s" + (" (measured fp32 matmul)" if device.type == 'cpu' else ""))
if 'loss_type' in options:
    log(f"training loss: {options['loss_type']}; validation: NELBO (an upper bound on the NLL)")

# -----------------------------------------------------------------------------
# training loop
bar = tqdm(total=max_steps, initial=start_step, disable=not master, dynamic_ncols=True, desc=args.family)
t_train, tokens_seen, val_loss, dt_ema = time.time(), 0, best_val, None
for step in range(start_step, max_steps + 1):
    last = step == max_steps
    # evaluate and checkpoint every eval_every steps and once at the end (the loop runs max_steps + 1 times)
    if (step % args.eval_every == 0 and step > start_step) or last:
        val_loss = evaluate()
        log(f"step {step} | val {val_loss:.4f} (ppl {math.exp(min(val_loss, 50)):.2f})")
        if master:
            ckpt = make_checkpoint(raw_model, cfg, args, args.family, options, args.tokenizer, step=step,
                                   val_loss=val_loss, optimizer=optimizer.state_dict(), run_info=info,
                                   loader=train_loader.state_dict())
            save_checkpoint(ckpt_path, ckpt)
    if master and ((args.sample_every and step % args.sample_every == 0 and step > start_step) or last):
        show_sample(step)
    if last:
        break

    # ---------------- one optimizer step ----------------
    t0 = time.time()
    lr = get_lr(step)
    for group in optimizer.param_groups:
        group['lr'] = lr
    t_gen_seed = args.seed * 1_000_003 + step  # the same on every rank: t strata cover the global batch
    train_loss = torch.zeros((), device=device)
    for micro_step in range(grad_accum):
        x0 = train_loader.next_batch()                                    # (micro, L)
        if ddp:  # all-reduce gradients only on the last micro-step; the others just accumulate locally
            model.require_backward_grad_sync = micro_step == grad_accum - 1
        with autocast:
            strata = (rank * grad_accum + micro_step, world * grad_accum)  # this micro-batch's slice of the batch
            try:
                nll, n = family.loss(model, x0, train=True, strata=strata,
                                     generator=torch.Generator().manual_seed(t_gen_seed), **options)
            except ValueError as e:  # a family rejects its options (e.g. eso --alpha0 0.5 with --batch-split 1)
                p.exit(2, f"error: {e}\n")
        loss = nll / n / grad_accum  # mean per token of this micro-batch, / accumulation: the sum is the batch mean
        loss.backward()
        train_loss += loss.detach()
    if ddp:  # log the loss of the whole global batch, not rank 0's share
        torch.distributed.all_reduce(train_loss, op=torch.distributed.ReduceOp.AVG)
    train_loss = train_loss.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or float('inf'))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    dt = time.time() - t0
    # ---------------- end of the step ----------------

    tokens_seen += tokens_per_step
    dt_ema = dt if dt_ema is None or step - start_step < 3 else 0.9 * dt_ema + 0.1 * dt
    tok_s = tokens_per_step / dt
    mfu = 3 * flops_per_token * tokens_per_step / dt / (peak * world) if peak else float('nan')
    bar.update(1)
    bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:,.0f}")
    if step % args.log_every == 0:
        log(f"step {step} | loss {train_loss:.4f} | lr {lr:.2e} | grad {grad_norm:.2f} | dt {dt * 1000:.0f}ms | "
            f"tok/s {tok_s:,.0f} | mfu {100 * mfu:.1f}%")
bar.close()

# -----------------------------------------------------------------------------
# results
elapsed = time.time() - t_train
if master:
    results = dict(family=args.family, size=args.size, options=options, tokenizer=args.tokenizer, data=args.data,
                   seq_len=args.seq_len, batch_size=batch_size, steps=max_steps, tokens=max_steps * tokens_per_step,
                   non_embedding_params=n_params, flops_per_token=flops_per_token,
                   train_flops=3 * flops_per_token * tokens_per_step * max_steps, val_loss=val_loss,
                   val_ppl=math.exp(min(val_loss, 50)),
                   seconds=elapsed, tokens_per_second=tokens_seen / elapsed if tokens_seen else None,
                   steady_step_seconds=dt_ema, device=info['device'], world_size=world, dtype=dtype,
                   git_commit=info['git_commit'])
    with open(os.path.join(args.out_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    log(f"done: val {val_loss:.4f} after {max_steps} steps in {elapsed:.0f}s -> {args.out_dir}/results.json")
cleanup_distributed()
