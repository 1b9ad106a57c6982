"""Sample from any nanodllm checkpoint; the family, model and tokenizer come from the checkpoint itself.

    python sample.py --ckpt out/ckpt.pt
    python sample.py --ckpt out/ckpt.pt --prompt "ROMEO:" --num-samples 3 --steps 64 --show-steps 8
    python sample.py --ckpt out/ckpt.pt --eval --judge runs/judge/ckpt.pt --num-samples 64 --steps 16,32,64,128
    python sample.py --ckpt out/ckpt.pt --task sudoku --order confidence --steps 8,32   # task accuracy, NFE, tok/s
    python sample.py --ckpt sft/ckpt.pt --prompt "What is 3+4?" --temperature 0 --order confidence
    python sample.py --ckpt out/ckpt.pt --infill "O Romeo, [_6_] art thou Romeo?" --show-steps 1

A checkpoint fine-tuned on prompt/response records generates the response after --prompt (no BOS), shown up to its
first EOS. --infill fills gaps at any positions (diffusion families; nanodllm/infill.py has the gap syntax).
--task decodes a task's test records and prints accuracy, NFE and tok/s (nanodllm/taskeval.py).

Exit codes: 0 done; 2 bad input (a flag, the prompt, or a checkpoint that is missing, unsafe, corrupt or edited);
1 the sampler failed (non-finite probabilities, out of memory); 130 Ctrl-C. Each error is one line on stderr.
Before sampling, what it will allocate (the KV cache at its full length, the tokens, the largest network call:
nanodllm/memory.py sampling_bytes) is checked against the free memory; a --length past the training length warns,
more than 8x past it is refused.
"""
import inspect
import os
import sys
import time

import torch

from nanodllm import cli, data, decode, infill, memory
from nanodllm.checkpoint import load_checkpoint
from nanodllm.common import free_memory, resolve_device
from nanodllm.families import get_family

FAR_PAST = 8  # --length at most this many times the training length (longer: refused; longer than it: a warning)
p = cli.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--ckpt', default='out/ckpt.pt', help='checkpoint written by train.py')
p.add_argument('--prompt', default='', help='text the samples start with (kept fixed; empty: unconditional)')
p.add_argument('--num-samples', type=cli.integer(min=1), default=2)
p.add_argument('--length', type=cli.integer(min=0), default=0, help='tokens per sample, prompt included (0: the '
               'training length). Longer: a warning, as positions past it were never trained; more than '
               f'{FAR_PAST}x longer, or more than the KV cache and logits can take in memory: refused')
p.add_argument('--steps', type=cli.list_of(cli.integer(min=0)), default=[0],
               help='diffusion sampling steps (0: one per token); ignored by AR; --eval takes a comma-separated list')
p.add_argument('--temperature', type=cli.number(ge=0), default=1.0,
               help='0: greedy, always the most likely token (the positions follow --order)')
p.add_argument('--top-p', type=cli.number(gt=0, le=1), default=1.0, help='nucleus sampling mass in (0, 1] (1: off)')
p.add_argument('--seed', type=cli.integer(min=0), default=0)
p.add_argument('--noise-removal', choices=('ancestral', 'greedy', 'none'), default=None,
               help="mdlm: ancestral | greedy | none; duo: ancestral | greedy")
p.add_argument('--alpha0', type=cli.number(ge=0, le=1), default=None, help='eso: alpha_0 at sampling time '
               '(default: as trained)')
p.add_argument('--no-cache', action='store_true', help='disable the KV / no-change cache (same samples, slower)')
p.add_argument('--show-steps', type=cli.integer(min=0), default=0, help='print the state every N network calls')
p.add_argument('--device', type=cli.device, default='auto', help='auto | cpu | cuda | cuda:N | mps')
# sample quality (nanodllm/quality.py, spec §7.2-7.4)
p.add_argument('--eval', action='store_true', help='print gen PPL, entropy, NFE and tok/s per --steps value instead '
               'of samples, and write them to JSON')
p.add_argument('--judge', default='', help='--eval: the judge LM, an AR checkpoint (e.g. runs/judge/ckpt.pt) or '
               'hf:NAME (a Hugging Face causal LM; pip install -e ".[judge]")')
p.add_argument('--batch-size', type=cli.integer(min=0), default=0,
               help='--eval: samples per sampler call (0: --num-samples)')
p.add_argument('--eval-json', default='', help='--eval: output file (default: eval.json next to the checkpoint)')
# task accuracy (nanodllm/taskeval.py, issue 19)
p.add_argument('--task', default='', help='print test accuracy, NFE and tok/s per --steps value (greedy unless '
               '--temperature is given): a bundled task (sudoku, arith, countdown), a folder from python -m '
               'nanodllm.tasks, or a GSM8K-style .jsonl')
p.add_argument('--task-records', type=cli.integer(min=0), default=0, help='--task: the first N test records (0: all)')
# conditional generation: given tokens at any positions, decoding orders (the samplers' given/order/block_size)
cond = p.add_argument_group('conditional generation')
cond.add_argument('--infill', default='', help='text with gaps to fill: [____] = one token per underscore, [_N_] = '
                  'N tokens, e.g. "O Romeo, [_6_] art thou Romeo?" (diffusion families; --length: free positions '
                  'after it up to that length)')
cond.add_argument('--order', choices=('random', 'confidence', 'margin'), default='random',
                  help="which positions to commit: the family's own sampler (random) | highest top probability | "
                       "largest top1 - top2 margin (mdlm, eso)")
cond.add_argument('--block-size', type=cli.integer(min=1), default=None,
                  help='semi-autoregressive blocks left to right, --steps steps per block (1 with --steps 1: one '
                       'token per step, left to right)')
args = p.parse_args()
if args.infill and (args.prompt or args.eval):
    p.fail("--infill is the whole row (its text and gaps): drop --prompt and --eval")
if len(args.steps) > 1 and not (args.eval or args.task):
    p.fail("several --steps values need --eval (sample quality per step count); pass one value")
if args.eval and (args.prompt or not args.judge):
    p.fail("--eval scores unconditional samples under a judge: drop --prompt and pass --judge (an AR checkpoint "
           "such as runs/judge/ckpt.pt, or hf:NAME)")

try:  # the checkpoint is loaded with weights_only=True and checked (family, options, shapes, finite weights)
    device = resolve_device(args.device)
    model, ckpt = load_checkpoint(args.ckpt, device)
except ValueError as e:
    p.fail(e)
family = get_family(ckpt['family'])
tokenizer = data.get_tokenizer(ckpt['tokenizer'])
mask_id = model.cfg.mask_id
length = args.length or model.cfg.seq_len

# the prompt: AR starts from BOS (not in the prompt/response form of a records checkpoint); diffusion families from
# nothing (all noise); --infill: the template is the row
try:
    ids = tokenizer.encode(args.prompt) if args.prompt else []
except (UnicodeError, ValueError) as e:  # e.g. bytes that are not UTF-8 on the command line
    p.fail(f"--prompt cannot be encoded by the {tokenizer.name} tokenizer ({type(e).__name__}): pass UTF-8 text")
responses = bool(args.prompt) and ckpt.get('data_kind') == 'records'  # prompt/response form: no BOS, cut at EOS
if getattr(family, 'BOS_PREFIX', False) and not responses:
    ids = [tokenizer.bos] + ids
if len(ids) >= length:
    p.fail(f"the prompt is {len(ids)} tokens but samples are {length} long: shorten --prompt or raise --length")
prompt = torch.tensor(ids, dtype=torch.long) if ids else None
given, gaps = None, None
if args.infill:  # the row = the template: given text, FREE gaps (nanodllm/infill.py)
    if getattr(family, 'BOS_PREFIX', False):
        p.fail(f"--infill needs a diffusion family (mdlm, duo, eso): {ckpt['family']} generates left to right only; "
               f"use --prompt")
    try:
        row, gaps = infill.template_row(args.infill, tokenizer, context=model.cfg.seq_len)
    except (UnicodeError, ValueError) as e:
        p.fail(e)
    if args.length and args.length < len(row):
        p.fail(f"--infill is {len(row)} tokens (text and gaps) but --length is {args.length}: raise or drop --length")
    row += [decode.FREE] * (args.length - len(row) if args.length else 0)  # --length: free positions after it
    prompt, given, length = None, torch.tensor(row, device=device).expand(args.num_samples, -1), len(row)

# a length past the training context warns (positions the model never saw), far past it (> 8x) is refused; then
# memory (nanodllm/memory.py sampling_bytes): the KV cache at its full length (AR, Eso-LM), the tokens and the
# largest network call, refused in one line if it will not fit
cfg = model.cfg
if length > FAR_PAST * cfg.seq_len:
    p.fail(f"--length {length} is more than {FAR_PAST}x the {cfg.seq_len} tokens this model was trained on, far past "
           f"the positions it has learned: pass --length {FAR_PAST * cfg.seq_len} or less (0: the training length)")
if length > cfg.seq_len:
    print(f"warning: --length {length} is past the {cfg.seq_len} tokens this model was trained on: positions "
          f"beyond them were never trained, so expect worse samples", file=sys.stderr)
per_call = (args.batch_size or args.num_samples) if args.eval else args.num_samples  # samples in one sampler call
size = next(model.parameters()).element_size()
need = memory.sampling_bytes(cfg, ckpt['family'], per_call, length, not args.no_cache, max(1, len(ids)), size)
kv = memory.kv_cache_bytes(cfg, ckpt['family'], per_call, length, not args.no_cache, size)
free = free_memory(device)
lower = "lower --length or --num-samples" + (" (or --batch-size)" if args.eval else "")
if need > free:
    p.fail(f"{per_call} samples x --length {length} would need about {need / 2**30:.1f} GiB on {device.type}"
           + (f" (the KV cache, allocated at its full length: {kv / 2**30:.1f} GiB)" if kv else "")
           + f" but {free / 2**30:.1f} GiB are free: {lower}")


def out_of_memory(e):
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU/MPS allocator's RuntimeError."""
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
        isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e) or 'out of memory' in str(e)))


oom = f"out of memory while sampling {per_call} x {length} tokens on {device.type}: {lower}"

# family-specific keywords, passed only where the family's sampler takes them
wanted = dict(noise_removal=args.noise_removal, use_cache=False if args.no_cache else None, alpha0=args.alpha0)
accepted = inspect.signature(family.sample).parameters
for k, v in wanted.items():
    if v is not None and k not in accepted:
        p.fail(f"--{k.replace('_', '-')} does not apply to the {ckpt['family']} family")
if args.noise_removal is not None and args.noise_removal not in family.NOISE_REMOVALS:
    p.fail(f"--noise-removal {args.noise_removal} is not available for {ckpt['family']}: use one of "
           f"{', '.join(family.NOISE_REMOVALS)}")
kwargs = {k: v for k, v in wanted.items() if v is not None}
kwargs.update({k: v for k, v in dict(order=args.order, block_size=args.block_size).items()
               if v not in (None, 'random')})  # the samplers refuse an order they cannot run (one line)
if 'alpha0' in accepted and 'alpha0' not in kwargs and 'alpha0' in ckpt['options']:
    kwargs['alpha0'] = ckpt['options']['alpha0']  # sample as trained unless --alpha0 says otherwise

if args.task:  # task accuracy instead of printed samples: one row per step count (nanodllm/taskeval.py)
    from nanodllm import taskeval
    order, block = args.order, args.block_size
    try:
        task, records, params = taskeval.load_task(args.task, n=args.task_records or None)
        settings = [('l2r' if ckpt['family'] == 'ar' and order == 'random' else order, s or None, block)
                    for s in (args.steps if ckpt['family'] != 'ar' else [0])]
        temperature = args.temperature if any(a.startswith('--temperature') for a in sys.argv[1:]) else 0.0
        rows = taskeval.evaluate(model, ckpt, task, records, settings, temperature=temperature,
                                 batch_size=args.batch_size, seed=args.seed, length=length,
                                 **{k: v for k, v in kwargs.items() if k not in ('order', 'block_size')})
    except ValueError as e:
        p.fail(e)
    print(f"{ckpt['family']} on {task} {params}, {len(records)} test records, temperature {temperature}")
    print(taskeval.format_rows(rows))
    sys.exit(0)

if args.eval:  # sample quality instead of printed samples: one row per step count, then JSON (nanodllm/quality.py)
    from nanodllm import quality
    try:
        judge = quality.load_judge(args.judge, device)
        result = quality.evaluate_checkpoint(model, ckpt, judge, args.steps, args.num_samples, length,
                                              args.batch_size or None, args.temperature, args.top_p, args.seed,
                                              **kwargs)
    except ValueError as e:
        p.fail(e)
    except FloatingPointError as e:
        p.fail(e, code=1)
    except (RuntimeError, MemoryError) as e:
        if not out_of_memory(e):
            raise
        p.fail(oom, code=1)
    out = args.eval_json or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), 'eval.json')
    quality.write_json(out, result)
    print(f"wrote {out}")
    sys.exit(0)

calls = 0


def show(x):
    global calls
    calls += 1
    if args.show_steps and calls % args.show_steps == 0:
        print(f"[call {calls}] {tokenizer.decode(x[0].tolist(), mask_id=mask_id)!r}")


val = ckpt.get('val_loss')
print(f"{ckpt['family']} {ckpt['options']} | {ckpt['args'].get('size')} | trained {ckpt.get('step')} steps, "
      f"val {val if val is None else round(val, 4)} | {kwargs}")
t0 = time.time()
try:
    x, nfe = family.sample(model, args.num_samples, length, steps=args.steps[0] or None, prompt=prompt,
                           temperature=args.temperature, top_p=args.top_p,
                           generator=torch.Generator(device).manual_seed(args.seed), callback=show, given=given,
                           **kwargs)
except ValueError as e:  # an order or a block size the family cannot run
    p.fail(e)
except FloatingPointError as e:  # NaN probabilities: never print them as text
    p.fail(e, code=1)
except (RuntimeError, MemoryError) as e:  # e.g. the allocator of a KV cache or logits that do not fit after all
    if not out_of_memory(e):
        raise
    p.fail(oom, code=1)
except KeyboardInterrupt:
    print("interrupted (Ctrl-C): no sample was printed", file=sys.stderr)
    sys.exit(130)
dt = time.time() - t0
rows = x.tolist()
if responses:  # prompt + response, up to the response's first EOS
    rows = decode.cut_at_eos(x, tokenizer.eos, decode.resolve_given(args.num_samples, length, prompt=prompt))
for i, row in enumerate(rows):
    text = infill.show_infill(row, gaps, tokenizer, mask_id) if gaps else tokenizer.decode(row, mask_id=mask_id)
    print(f"\n=== sample {i} ===\n{text}")
print(f"\n{nfe} network calls, {dt:.2f}s, {args.num_samples * length / dt:,.0f} tok/s")
