"""Train any nanodllm family, from a laptop CPU to a multi-GPU node, with one code path.

    python train.py                                              # AR, tiny model, Shakespeare bytes, CPU, ~8 min
    python train.py --family mdlm --loss elbo --flops 3e14        # MDLM on the NELBO, steps from a FLOP budget
    torchrun --standalone --nproc_per_node=8 train.py --family eso --size 1.7b --tokenizer gpt2 --data corpus/ \
        --seq-len 2048 --batch-size 256 --micro-batch-size 16 --fsdp --activation-checkpointing --lr 2e-4 --compile

The 1.7B line needs ~41 GB per GPU per the memory planner (plain DDP fits --micro-batch-size 4 in 80 GB), as
`python -m nanodllm.flops --size 1.7b --family eso --nproc 8 --batch-size 256 --micro-batch-size 16 --fsdp
--activation-checkpointing` prints; train.py prints the plan at start-up on a GPU. Only log steps (--log-every)
make the host wait for the GPU (nanodllm/loop.py); rank 0 writes checkpoints in the background.

Reads straight down: args -> processes -> out-dir -> data -> model, wrapped (DDP or FSDP) -> optimizer and schedule
-> loop -> results.json.
Exit codes: 0 completed, 2 bad input or refused, 3 diverged, 130 interrupted (SIGINT/SIGTERM), 1 another failure
(e.g. a full disk); each with one line on stderr. results.json records the status ('completed', 'interrupted',
'diverged', 'failed') whenever training started; `--resume` of a finished run rewrites it from the checkpoint if it
is missing or damaged.
"""
import json
import math
import os
import sys
import time
from dataclasses import asdict

import torch
import torch.distributed as dist
from tqdm import tqdm

from nanodllm import checkpoint, cli, curriculum, data, distill, flops, loop, memory, parallel, records, rundir
from nanodllm.common import (DTYPES, autocast_context, exit_process, free_memory, init_distributed, resolve_dtype,
                             run_info)
from nanodllm.families import FAMILY_NAMES, get_family
from nanodllm.config import SIZES, get_config
from nanodllm.validation import batch_rows, eval_set_size, validation_loss
from nanodllm.model import Model

# -----------------------------------------------------------------------------
# arguments: each flag is checked where it is parsed (nanodllm/cli.py): one line `error: ...` and exit code 2
p = cli.ArgumentParser(description=__doc__.split('\n')[0])
# what to train
p.add_argument('--family', type=cli.one_of(FAMILY_NAMES, 'family'), default='ar', help=' | '.join(FAMILY_NAMES))
p.add_argument('--size', type=cli.one_of(tuple(SIZES), 'size'), default='micro', help=' | '.join(SIZES))
p.add_argument('--loss', dest='loss_type', choices=('low_var', 'elbo'), default=None,
               help="mdlm/eso training loss: low_var (the paper's cross-entropy, default) | elbo (the NELBO); "
                    "validation always reports the NELBO")
p.add_argument('--alpha0', type=cli.number(ge=0, le=1), default=None, help='eso: alpha_0; 1 = MDLM-like, 0 = AR')
p.add_argument('--batch-split', type=cli.number(ge=0, le=1), default=None,
               help='eso with 0 < alpha0 < 1: fraction of each batch on the diffusion loss, the rest on the '
                    'sequential loss (refused at alpha0 0 or 1, which train one part only)')
# data
p.add_argument('--data', default='shakespeare',
               help="'shakespeare' (bundled), a .txt / .jsonl / .jsonl.gz file, a folder of them, or hf:NAME[:CONFIG]")
p.add_argument('--text-field', default='text', help='the text field of .jsonl records and hf: datasets')
p.add_argument('--tokenizer', choices=data.TOKENIZERS, default='byte', help='byte (256 ids) | gpt2 (50257 ids)')
p.add_argument('--seq-len', type=cli.integer(min=1), default=256, help='context length L in tokens (AR: >= 2)')
p.add_argument('--batch-size', type=cli.batch_size, default='16',
               help="total batch per optimizer step over all processes: sequences (e.g. 256), or tokens with a "
                    "'tok' suffix (e.g. 524288tok); gradient accumulation makes up the difference")
p.add_argument('--micro-batch-size', type=cli.integer(min=0), default=0,
               help='sequences per process per forward (0: batch / processes)')
# how long
p.add_argument('--max-steps', type=cli.integer(min=1), default=1500, help='optimizer steps (unless --flops is set)')
p.add_argument('--flops', type=cli.number(ge=0), default=0, help='FLOP budget: steps = flops / (3 F tokens_per_step)')
# optimizer: AdamW with warmup + cosine (spec §6.3)
p.add_argument('--lr', type=cli.number(gt=0), default=1e-3, help="peak learning rate (the paper's runs: 2e-4)")
p.add_argument('--min-lr', type=cli.number(ge=0), default=None, help='final learning rate <= --lr (default lr/10)')
p.add_argument('--warmup-steps', type=cli.integer(min=-1), default=-1, help='-1: max(1%% of steps, 100), <= 10%%')
p.add_argument('--weight-decay', type=cli.number(ge=0), default=0.1, help='AdamW weight decay, on all parameters')
p.add_argument('--beta1', type=cli.number(ge=0, lt=1), default=0.9)
p.add_argument('--beta2', type=cli.number(ge=0, lt=1), default=0.95)
p.add_argument('--grad-clip', type=cli.number(ge=0), default=1.0, help='clip the gradient norm (0: off)')
# evaluation, logging, checkpoints
p.add_argument('--eval-every', type=cli.integer(min=1), default=250, help='validate and checkpoint every N steps')
p.add_argument('--eval-sequences', type=cli.integer(min=1), default=None,
               help='validation sequences per evaluation: the first N of the val split, the same (with the same '
                    'noise) whatever the micro-batch size and process count (default: 320, or all if fewer)')
p.add_argument('--eval-batches', **cli.removed('--eval-sequences N (sequences, e.g. the old batches x micro-batch)'))
p.add_argument('--sample-every', type=cli.integer(min=0), default=0, help='print a sample every N steps (0: at end)')
p.add_argument('--log-every', type=cli.integer(min=1), default=10,
               help='print a log line every N steps (only these steps make the host wait for the GPU)')
p.add_argument('--out-dir', default='out', help='where ckpt.pt, log.txt and results.json go')
again = p.add_mutually_exclusive_group()
again.add_argument('--resume', action='store_true',
                   help='continue <out-dir>/ckpt.pt exactly: weights, optimizer, data position and random streams '
                        '(same model, data, family and global batch; micro-batch size and process count may change); '
                        'a finished run trains nothing and rewrites a missing or damaged results.json from it')
again.add_argument('--overwrite', action='store_true', help='delete the checkpoint in <out-dir> and start afresh')
# Duo few-step training (spec §3.5, §3.6): the Gumbel-softmax curriculum (nanodllm/curriculum.py), DCD (distill.py)
fast = p.add_argument_group('duo few-step training')
fast.add_argument('--curriculum', action='store_true', default=None,
                  help='duo: train on the Gaussian latent (soft input, hard latent) until the curriculum ends')
fast.add_argument('--curriculum-steps', nargs=2, type=cli.integer(min=0), metavar=('START', 'END'),
                  help='tau schedule: constant until START, to its end value at END, then the discrete NELBO '
                       "(default 10%% and 20%% of the run: the authors' 100k, 200k of 1M steps)")
fast.add_argument('--curriculum-tau', nargs=2, type=cli.number(), metavar=('LOG10_START', 'LOG10_END'),
                  help='log10 tau at START and END (default -1 -2)')
fast.add_argument('--gamma', nargs=2, type=cli.number(), metavar=('MIN', 'MAX'),
                  help="log-SNR range of the Gaussian latent (default: the authors' curriculum -3.5 -1.75 and DCD "
                       "-4 -1 for GPT-2's vocabulary, carried to this one's: the same alpha range)")
fast.add_argument('--distill-from', metavar='CKPT', help='duo: distil this Duo checkpoint (DCD); the student starts '
                  'from it, the teacher is its copy refreshed every --distill-every steps')
fast.add_argument('--distill-every', type=cli.integer(min=1), help='K: steps per round (default: the run / 5)')
fast.add_argument('--distill-T', type=cli.integer(min=1), help='T: round n has the gap dt = 2^n / T (default 512)')
fast.add_argument('--distill-kl', choices=('bwd', 'fwd'), help='KL(student || teacher) (bwd, default) or the reverse')
# system
p.add_argument('--device', type=cli.device, default='auto', help='auto | cpu | cuda | cuda:N | mps')
p.add_argument('--dtype', choices=DTYPES, default='auto', help='auto: bf16 on a GPU, fp32 on CPU (recorded as used)')
p.add_argument('--compile', action='store_true', help='torch.compile the model (worth it on GPU; slow start on CPU)')
p.add_argument('--fsdp', action='store_true', help='shard weights, gradients and AdamW states over the processes '
               '(FSDP2; needs torchrun; for models that do not fit DDP, e.g. 1.7B)')
p.add_argument('--activation-checkpointing', action='store_true',
               help='keep only each block\'s input and recompute the block in the backward: ~12x less activation '
                    'memory for ~1/3 more compute')
p.add_argument('--seed', type=cli.integer(min=0, max=2**31 - 1), default=1)
# fine-tuning: a --data .jsonl of prompt/response (or question/answer) records is found by its fields (records.py)
tune = p.add_argument_group('fine-tuning')
tune.add_argument('--init-from', default=None, metavar='CKPT',
                  help='start from the weights of a train.py checkpoint (same --family, --size, --tokenizer); '
                       'optimizer, schedule and step start fresh')
args = p.parse_args()

family = get_family(args.family)
options = {k: (getattr(args, k) if getattr(args, k, None) is not None else v) for k, v in family.OPTIONS.items()}
for k, flag in {'loss_type': '--loss', 'alpha0': '--alpha0', 'batch_split': '--batch-split'}.items():
    if getattr(args, k) is not None and k not in options:
        p.fail(f"{flag} does not apply to --family {args.family}")
if args.batch_split is not None and options.get('alpha0') in (0.0, 1.0):  # one part only: nothing to split
    p.fail(f"--batch-split splits a batch between Eso-LM's two parts, but --alpha0 {options['alpha0']:g} trains only "
           f"the {'diffusion' if options['alpha0'] == 1 else 'sequential'} part: drop --batch-split, or pick --alpha0 "
           f"in (0, 1)")
if args.fsdp and args.dtype == 'float16':
    p.fail("--fsdp does not work with --dtype float16: its loss scaling (GradScaler) does not see the other ranks' "
           "overflows; use --dtype bfloat16 (the default on GPUs)")
if args.family == 'ar' and args.seq_len < 2:
    p.fail("--seq-len must be >= 2 for AR: it predicts each token from the ones before it")
if problem := distill.flag_problem(args):  # --curriculum / --distill-from and their options: duo only, one at a time
    p.fail(problem)
init_ckpt = student_ckpt = None  # read once, here: checked now, loaded into the model below
try:  # the family and tokenizer of --init-from / --distill-from, before any data is prepared (the shape: below)
    if args.init_from and not args.resume:
        init_ckpt = checkpoint.check_init_from(args.init_from, args.family, args.tokenizer, mmap=True)
    if args.distill_from:
        student_ckpt = distill.check_source(args.distill_from, args.family, args.tokenizer)
except ValueError as e:
    p.fail(e)
min_lr = args.lr / 10 if args.min_lr is None else args.min_lr
if min_lr > args.lr:
    p.fail(f"--min-lr {min_lr:g} is above --lr {args.lr:g}: the schedule decays from --lr down to --min-lr")
count, unit = args.batch_size
if unit == 'tokens' and (count % args.seq_len or count < args.seq_len):
    p.fail(f"--batch-size {count}tok is not a positive multiple of --seq-len {args.seq_len}")
batch_size = count // args.seq_len if unit == 'tokens' else count  # global sequences per optimizer step

# -----------------------------------------------------------------------------
# processes, devices, precision, seeds
try:
    ddp, rank, _, world, device = init_distributed(args.device)
    dtype = resolve_dtype(args.dtype, device)  # the dtype really used: recorded in the log, checkpoint and results
except ValueError as e:
    p.fail(e)
master = rank == 0
autocast = autocast_context(device, dtype)
torch.manual_seed(args.seed + rank)  # masks and noise differ per rank; t strata are shared (see noise.sample_t)
if device.type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
micro = args.micro_batch_size or batch_size // world
if micro < 1 or batch_size % (micro * world):
    p.fail(f"--batch-size {batch_size} must be a multiple of --micro-batch-size {micro} x {world} processes")
grad_accum = batch_size // (micro * world)
tokens_per_step = batch_size * args.seq_len
if args.family == 'eso' and 0 < options['alpha0'] < 1 and not 0 < int(options['batch_split'] * micro) < micro:
    p.fail(f"--alpha0 {options['alpha0']:g} trains a diffusion and a sequential part, but --batch-split "
           f"{options['batch_split']:g} of a micro-batch of {micro} leaves one of them empty: pick --batch-split in "
           f"(0, 1) with 0 < floor(batch_split x micro-batch) < micro-batch")

# -----------------------------------------------------------------------------
# the out-dir: one run at a time (lock), never replaces a checkpoint unless asked, writable, signals caught
run, problem = None, None
try:
    run = rundir.RunDir(args.out_dir, resume=args.resume, overwrite=args.overwrite, master=master)
except ValueError as e:
    problem = e
p.fail_together(problem, ddp, device)
ckpt_path = run.ckpt_path

# -----------------------------------------------------------------------------
# data: data.prepare raises a one-line ValueError for every problem with --data
try:  # rank 0 tokenizes once ...
    meta = records.prepare_any(args.data, args.tokenizer, args.seq_len, args.text_field) if master else None
except (ValueError, OSError) as e:
    problem = e
p.fail_together(problem, ddp, device)  # (under DDP also the barrier: the other ranks wait for rank 0's files)
try:
    meta = meta or records.prepare_any(args.data, args.tokenizer, args.seq_len, args.text_field)  # ... the others
    tokenizer = data.get_tokenizer(args.tokenizer)
    train_loader = data.Loader(os.path.join(meta['out_dir'], 'train.bin'), micro, args.seq_len, rank, world,
                               seed=args.seed, device=device, prompt_path=records.prompt_path(meta, 'train'))
    val_prompts = records.prompt_path(meta, 'val')  # records: each row's prompt length (its given positions)
    val_path = os.path.join(meta['out_dir'], 'val.bin')
    n_eval = eval_set_size(args.eval_sequences, meta['val_tokens'], args.seq_len)  # the first n_eval val sequences
    data.eval_batches(val_path, batch_rows(n_eval, micro, world), args.seq_len, rank, world)  # raises now if too few
except (ValueError, OSError) as e:
    problem = e
p.fail_together(problem, ddp, device)

# -----------------------------------------------------------------------------
# model, optimizer, schedule; --resume restores all of it (checkpoint.resume checks the flags against it)
cfg = get_config(args.size, tokenizer.n_vocab + 1, args.seq_len)  # +1: the mask token is the last id
fsdp = args.fsdp and ddp  # one process has nothing to shard
n_weights = flops.non_embedding_params(cfg) + cfg.vocab_size * cfg.n_embd
need = n_weights * (4 + 12 / world if fsdp else 16)  # fp32 weights, grads, AdamW m and v (FSDP: built whole, kept 1/N)
if need > free_memory(device):
    p.fail(f"--size {args.size} needs ~{need / 2**30:.1f} GiB for its weights, gradients and AdamW state but "
           f"{free_memory(device) / 2**30:.1f} GiB are free on {device}: pick a smaller --size" +
           ("" if fsdp or world == 1 else " or shard it with --fsdp"))
torch.manual_seed(args.seed)  # identical initial weights on every rank
raw_model = Model(cfg).to(device)  # unwrapped, uncompiled: evaluated, saved and sampled (FSDP shards it in place)
raw_model.activation_checkpointing = args.activation_checkpointing
torch.manual_seed(args.seed + rank)
flops_per_token = flops.forward_flops_per_token(cfg)
max_steps = flops.steps_for_budget(args.flops, cfg, tokens_per_step) if args.flops else args.max_steps
if max_steps < 1:
    p.fail(f"--flops {args.flops:g} buys less than one step of {3 * flops_per_token * tokens_per_step:.3g} FLOPs: "
           f"raise it or shrink --size/--batch-size")
objective = None  # the training loss per step: family.loss, unless Duo trains on the curriculum or distils (DCD)
try:
    if args.curriculum:  # nanodllm/curriculum.py
        objective = curriculum.Curriculum(max_steps, cfg.vocab_size, args.curriculum_steps, args.curriculum_tau,
                                          args.gamma)
    if args.distill_from:  # the student starts from the Duo checkpoint; the teacher is its copy (nanodllm/distill.py)
        distill.load_student(args.distill_from, raw_model, args.family, args.tokenizer, asdict(cfg), student_ckpt)
        objective = distill.Distiller(raw_model, args.out_dir, args.distill_every or max(1, max_steps // 5),
                                      args.distill_T or 512, args.distill_kl or 'bwd', args.gamma, master,
                                      dict(cfg=cfg, args=vars(args), tokenizer=args.tokenizer))
except ValueError as e:
    p.fail(e)
warmup = args.warmup_steps if args.warmup_steps >= 0 else min(max(round(0.01 * max_steps), 100), max_steps // 10)
model = parallel.wrap_model(raw_model, device, fsdp=fsdp, compile=args.compile, dtype=dtype)  # (compile: slow start)
model.cfg = cfg  # families read model.cfg (mask id, vocabulary) through the compile/DDP/FSDP wrappers too
optimizer = torch.optim.AdamW(raw_model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8,
                              weight_decay=args.weight_decay, fused=device.type == 'cuda')  # FSDP: over the shards
scaler = torch.amp.GradScaler(device.type, enabled=dtype == 'float16')  # fp16 needs loss scaling; a no-op otherwise
start_step, val_loss, seconds_before, resumed, init_info = 0, None, 0.0, '', None
if args.init_from and not args.resume:  # fine-tuning: the weights only (checkpoint.init_from checks the model)
    try:
        init_info = checkpoint.init_from(args.init_from, raw_model, args.family, args.size, args.tokenizer,
                                         ckpt=init_ckpt)
    except ValueError as e:
        problem = e
    p.fail_together(problem, ddp, device)
if args.resume:  # any mode's checkpoint, on any process count; under FSDP every rank loads its shards
    expected = dict(family=args.family, options=options, size=args.size, seq_len=args.seq_len, seed=args.seed,
                    tokenizer=args.tokenizer, data=args.data, batch_size=batch_size, model_config=asdict(cfg),
                    data_sha256=meta.get('source_sha256'), init_from=args.init_from,
                    **{k: getattr(args, k) for k in distill.FLAGS})
    hyper = dict(betas=(args.beta1, args.beta2), weight_decay=args.weight_decay)  # this run's, over the saved ones
    try:  # (mmap on GPUs: the page cache holds one copy of the file for all the ranks)
        ckpt, note = checkpoint.resume(ckpt_path, raw_model, optimizer, scaler, train_loader, expected, hyper,
                                       mmap=device.type == 'cuda')
    except ValueError as e:
        problem = e
    try:  # mid-round, DCD's teacher comes back from its file: the continuation is exact
        if objective and problem is None:
            objective.resume(ckpt['step'])
    except ValueError as e:
        problem = e
    p.fail_together(problem, ddp, device)
    start_step, val_loss, seconds_before = ckpt['step'], ckpt.get('val_loss'), ckpt.get('train_seconds', 0.0)
    init_info = ckpt.get('init_from')  # a resumed fine-tune still says where it started
    resumed = f"resumed {ckpt_path} at step {start_step} (trained in {ckpt.get('dtype')}){note}"
    if start_step > max_steps:
        p.fail(f"--resume: the checkpoint is at step {start_step}, beyond the {max_steps} steps asked for: raise "
               f"--max-steps/--flops")
batches = loop.Prefetcher(train_loader)  # the next micro-batch is read while the current one computes
record = loop.StepRecord(device, check_grad_norm=not scaler.is_enabled())  # loss, grad norm, first bad step
writer = checkpoint.BackgroundWriter()  # rank 0 writes checkpoints while training goes on
plan_kwargs = dict(family=args.family, options=options, nproc=world, fsdp=fsdp, dtype=dtype, grad_accum=grad_accum,
                   activation_checkpointing=args.activation_checkpointing, curriculum=bool(args.curriculum))
planned = memory.plan(cfg, micro_batch_size=micro, **plan_kwargs)  # bytes per GPU at the step's peak
if args.curriculum and (warning := memory.fit_warning(cfg, free_memory(device), micro, **plan_kwargs)):
    p.fail(warning.replace('warning: ', '').replace('GPU', 'device') + " (with the curriculum's B x L x V latent)")


def get_lr(step):
    """Warmup then cosine to min_lr (spec §6.3 WarmupCosineLR)."""
    if step < warmup:                                                 # 1) linear warmup
        return args.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))  # 2) cosine decay ...
    return min_lr + (args.lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))  # 3) ... to min_lr


def evaluate():
    """Validation loss on the first --eval-sequences sequences, each with its own noise (nanodllm/validation.py)."""
    return validation_loss(raw_model, family, options, val_path, n_eval, micro, args.seq_len, rank, world, ddp,
                           device, autocast, prompt_path=val_prompts)


def show_sample(step):
    """Every rank calls it (under FSDP, parallel.full_model gathers a plain copy); rank 0 samples alone."""
    plain = parallel.full_model(raw_model, device)
    if not master:
        return
    plain.eval()
    prompt = torch.tensor([tokenizer.bos]) if getattr(family, 'BOS_PREFIX', False) else None
    x, nfe = family.sample(plain, 1, min(args.seq_len, 256), steps=64, prompt=prompt,
                           generator=torch.Generator(device).manual_seed(args.seed))
    plain.train()
    tqdm.write(f"--- sample at step {step} ({nfe} network calls) ---\n{tokenizer.decode(x[0].tolist())}\n---")


def check(step):
    """Read the step record (the host waits for the GPU: log steps, evaluations, checkpoints) -> the last step's loss
    and gradient norm. A non-finite loss or gradient norm at any step so far ends the run (exit 3), naming the FIRST.
    Why weights updated by a non-finite step are never saved: the optimizer step is queued without waiting for the
    loss, so a bad step does update the weights; but the record keeps the first bad step until it is read, and save()
    calls check() before it gathers anything, so such a run exits instead (finite steps that leave non-finite
    weights are caught by save()'s all_finite): the checkpoint on disk predates the first bad step."""
    loss, grad_norm, bad = record.read()
    if bad is not None:
        diverged(bad[0], f"loss {bad[1]}, gradient norm {bad[2]}")
    return loss, grad_norm


def save(step):
    """Checkpoint the state *before* `step` runs, never a diverged one (see check). Every rank gathers the full state
    into rank 0's CPU memory (a collective under FSDP) and sends its RNG state; rank 0 then writes it in a background
    thread (atomically, one write at a time) while training goes on. A failed write (full disk, permissions, a folder
    in the way) is found at the next step's check or at exit and ends the run; the previous checkpoint is kept."""
    check(step)
    if not parallel.all_finite(raw_model):  # every rank looks at its own shards
        diverged(step, "non-finite weights")
    if run.agree(ddp, writer.failed(wait=True))[0]:  # the previous write is done, and went well
        finish('failed', step, code=rundir.EXIT_ERROR)
    model_state, optim_state = parallel.full_state_dict(raw_model, optimizer)  # copies, on rank 0's CPU
    rng = checkpoint.all_rng_states(device, ddp)
    if master:
        writer.start(ckpt_path, checkpoint.make_checkpoint(
            model_state, cfg, args, args.family, options, args.tokenizer, step=step, val_loss=val_loss, dtype=dtype,
            optimizer=optim_state, scaler=scaler.state_dict(), loader=batches.state_dict(), rng=rng,
            layout=dict(batch_size=batch_size, micro_batch_size=micro, world_size=world), run_info=info,
            data_sha256=meta.get('source_sha256'), data_kind=meta.get('kind', 'text'),
            init_from=init_info, train_seconds=seconds_before + time.time() - t_train,
            **(objective.state(step) if objective else {})))


def results(status, step, message=None):
    """What results.json says about this run: status, step reached, the set-up, the loss, the cost."""
    elapsed = seconds_before + time.time() - t_train
    return dict(status=status, step=step, steps=max_steps, val_loss=val_loss,
                val_ppl=math.exp(min(val_loss, 50)) if val_loss is not None else None, dtype=dtype,
                family=args.family, size=args.size, options=options, tokenizer=args.tokenizer, data=args.data,
                seq_len=args.seq_len, batch_size=batch_size, micro_batch_size=micro, world_size=world,
                eval_sequences=n_eval, tokens=step * tokens_per_step, non_embedding_params=n_params,
                flops_per_token=flops_per_token, train_flops=3 * flops_per_token * tokens_per_step * step,
                seconds=elapsed, tokens_per_second=tokens_seen / (time.time() - t_train) if tokens_seen else None,
                steady_step_seconds=dt_ema, resumed_from=start_step if args.resume else None, error=message,
                fsdp=fsdp, activation_checkpointing=args.activation_checkpointing, planned_peak_bytes=planned['total'],
                peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None,
                device=info['device'], git_commit=info['git_commit'], args=vars(args))


def finish(status, step, message=None, code=0, write=True):
    """Wait for the checkpoint being written (if it failed, the run failed: exit 1, unless it diverged), write
    results.json (rank 0), print the last line, exit with `code` (0, 1, 3 or 130)."""
    bar.close()
    if (error := writer.wait()) and status != 'diverged':
        status, message, code = 'failed', error, rundir.EXIT_ERROR
    written = run.write_results(results(status, step, message)) if write else True
    if message:
        run.error(message)
    run.log(f"{status}: step {step}/{max_steps}, val {val_loss if val_loss is not None else float('nan'):.4f} "
            f"-> {args.out_dir}/results.json")
    exit_process(code or (0 if written else rundir.EXIT_ERROR))


def diverged(step, what):
    finish('diverged', step, f"the run diverged at step {step}: {what}; the last good checkpoint is kept: try a "
           f"lower --lr (now {args.lr:g}) or --grad-clip (now {args.grad_clip:g})", rundir.EXIT_DIVERGED)


def out_of_memory(step):
    finish('failed', step, f"out of memory at step {step} with {micro} sequences of {args.seq_len} tokens per forward: "
           f"lower --micro-batch-size (gradient accumulation keeps --batch-size)", rundir.EXIT_ERROR)


# -----------------------------------------------------------------------------
# log the set-up: every check has passed, so the out-dir now belongs to this run (--overwrite deletes the old one)
run.begin()
info = run_info(device)
n_params = raw_model.num_params()
peak = flops.peak_flops(device)
run.log(f"run: {json.dumps(info)}\nargs: {json.dumps(vars(args))}\nmodel: {json.dumps(asdict(cfg))}")
run.log(f"family {args.family} {options} | {n_params / 1e6:.2f}M non-embedding params | {world} process(es) on "
        f"{device} ({dtype}, {'FSDP' if fsdp else 'DDP' if ddp else 'one process'}"
        f"{', activation checkpointing' if args.activation_checkpointing else ''}) | batch {batch_size} x "
        f"{args.seq_len} = {tokens_per_step:,} tokens/step = {micro} x {world} x {grad_accum} accumulation | "
        f"{max_steps} steps, {3 * flops_per_token * tokens_per_step * max_steps:.3g} FLOPs | warmup {warmup} | "
        f"validation on {n_eval} sequences | peak {peak:.3g} FLOP/s"
        + (" (measured fp32 matmul)" if device.type == 'cpu' else ""))
if args.fsdp and not ddp:
    run.log("note: --fsdp in one process: there is nothing to shard, so it trains as one process (use torchrun)")
if device.type == 'cuda':  # what the planner predicts this step needs, and a warning if it will not fit
    gpu_memory = torch.cuda.get_device_properties(device).total_memory
    run.log(f"memory per GPU (nanodllm/memory.py):\n{memory.format_plan(planned, gpu_memory)}")
    if warning := memory.fit_warning(cfg, gpu_memory, micro, **plan_kwargs):
        run.warning(warning)
if 'loss_type' in options:
    run.log(f"training loss: {options['loss_type']}; validation: NELBO (an upper bound on the NLL)")
if objective:
    run.log(objective.describe(max_steps))
if resumed:
    run.log(resumed)
if meta.get('kind') == 'records':
    run.log(records.summary(meta) + "; loss per response + pad token, the prompt given")
if init_info and not args.resume:
    run.log(f"initialised from {init_info['path']} (step {init_info['step']}, val {init_info['val_loss'] or 0:.4f}):"
            f" fresh optimizer and schedule")

# -----------------------------------------------------------------------------
# training loop: only log steps, evaluations and checkpoints make the host wait for the GPU (nanodllm/loop.py)
t_train, tokens_seen, dt_ema, step = time.time(), 0, None, start_step
bar = tqdm(total=max_steps, initial=start_step, disable=not master, dynamic_ncols=True, desc=args.family)
if start_step == max_steps:  # a finished run resumed with the same budget: nothing to do but mend results.json
    run.log(f"nothing to do: {ckpt_path} is already at step {max_steps}")
    if damaged := run.results_problem():  # None: a readable 'completed' results.json, which stays as it is
        run.warning(f"{run.results_path} {damaged}: rewritten from {ckpt_path}")
    finish('completed', step, write=damaged is not None)
run.on_hard_stop = lambda: (writer.wait(),  # a second signal: the checkpoint being written is finished first
                            run.write_results(results('interrupted', step, 'stopped at once by a second signal')))
if args.resume:  # last, so that nothing in the set-up (e.g. the CPU FLOP/s probe) shifts the random streams
    run.log(checkpoint.restore_rng(ckpt, args.seed, device, rank, world) or "each process's random stream "
            "continues from the checkpoint")
    del ckpt  # (unmaps the file)
run.start_loop()  # from here a SIGINT/SIGTERM ends the step, saves and stops; a second one stops at once
t_timed, steps_timed, n_logged = time.time(), 0, 0  # step time: averaged over the steps since the host last waited
for step in range(start_step, max_steps + 1):
    last = step == max_steps
    # every rank, every step, no GPU involved: a signal or a failed checkpoint write on any rank stops all of them
    stop, write_failed = run.agree(ddp, run.signal is not None, writer.failed())
    if write_failed:
        finish('failed', step, code=rundir.EXIT_ERROR)                     # (rank 0 prints the writer's error)
    if stop and not last:
        if step > start_step:
            save(step)
        finish('interrupted', step, f"interrupted ({run.signal}) at step {step}: " + (
            "checkpoint saved, continue with --resume" if step > start_step else "no step was run, nothing changed"),
            rundir.EXIT_INTERRUPTED)
    # evaluate and checkpoint every eval_every steps and once at the end (the loop runs max_steps + 1 times)
    if (step % args.eval_every == 0 and step > start_step) or last:
        check(step)  # a non-finite step since the last check stops the run here, named, before it is evaluated
        try:
            val_loss = evaluate()
        except (torch.OutOfMemoryError, MemoryError):
            out_of_memory(step)
        run.log(f"step {step} | val {val_loss:.4f} (ppl {math.exp(min(val_loss, 50)):.2f})")
        if not math.isfinite(val_loss):
            diverged(step, f"validation loss {val_loss}")                 # never saved over the last good one
        save(step)
        t_timed, steps_timed = time.time(), 0
    if (args.sample_every and step % args.sample_every == 0 and step > start_step) or last:
        show_sample(step)
        t_timed, steps_timed = time.time(), 0
    if last:
        break

    # ---------------- one optimizer step: nothing in it waits for the GPU ----------------
    lr = get_lr(step)
    for group in optimizer.param_groups:
        group['lr'] = lr
    t_gen_seed = args.seed * 1_000_003 + step  # the same on every rank: t strata cover the global batch
    train_loss = torch.zeros((), device=device)
    loss_fn = objective.loss_at(step) if objective else family.loss  # DCD: the teacher is refreshed at K, 2K, ...
    try:
        for micro_step in range(grad_accum):
            x0, given = data.split_batch(batches.next_batch())            # (micro, L); given: records' prompts
            parallel.set_grad_sync(model, micro_step == grad_accum - 1)   # reduce gradients on the last one only
            with autocast:
                strata = (rank * grad_accum + micro_step, world * grad_accum)  # this micro-batch's slice
                nll, n = loss_fn(model, x0, train=True, strata=strata,
                                 generator=torch.Generator().manual_seed(t_gen_seed), given=given, **options)
            batches.prefetch()  # the next micro-batch is read and copied while this forward runs (as nanoGPT)
            loss = nll / n / grad_accum  # mean per token of this micro-batch, / accumulation: sum = batch mean
            scaler.scale(loss).backward()
            train_loss += loss.detach()
    except (torch.OutOfMemoryError, MemoryError):
        out_of_memory(step)
    if ddp:  # log the loss of the whole global batch, not rank 0's share
        dist.all_reduce(train_loss, op=dist.ReduceOp.AVG)
    scaler.unscale_(optimizer)
    grad_norm = parallel.clip_grad_norm_(model, args.grad_clip or float('inf'))  # a tensor on the device
    record.add(step, train_loss, grad_norm)  # a non-finite loss or norm is kept there, read by the next check()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    # ---------------- end of the step ----------------

    tokens_seen += tokens_per_step
    steps_timed += 1
    bar.update(1)
    if step % args.log_every == 0:
        train_loss, grad_norm = check(step)                               # the host waits for the GPU here
        dt, t_timed, steps_timed = (time.time() - t_timed) / steps_timed, time.time(), 0
        n_logged += 1
        dt_ema = dt if n_logged <= 3 else 0.9 * dt_ema + 0.1 * dt       # (the first steps pay the compilation)
        tok_s = tokens_per_step / dt
        mfu = 3 * flops_per_token * tokens_per_step / dt / (peak * world) if peak else float('nan')
        bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:,.0f}")
        run.log(f"step {step} | loss {train_loss:.4f} | lr {lr:.2e} | grad {grad_norm:.2f} | dt {dt * 1000:.0f}ms | "
                f"tok/s {tok_s:,.0f} | mfu {100 * mfu:.1f}%")
finish('completed', max_steps)
