"""Sample from any nanodllm checkpoint; the family, model and tokenizer come from the checkpoint itself.

    python sample.py --ckpt out/ckpt.pt
    python sample.py --ckpt out/ckpt.pt --prompt "ROMEO:" --num-samples 3 --steps 64 --show-steps 8
"""
import argparse
import inspect
import time

import torch

from nanodllm import data
from nanodllm.common import get_family, load_checkpoint

p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
p.add_argument('--ckpt', default='out/ckpt.pt', help='checkpoint written by train.py')
p.add_argument('--prompt', default='', help='text the samples start with (kept fixed; empty: unconditional)')
p.add_argument('--num-samples', type=int, default=2)
p.add_argument('--length', type=int, default=0, help='tokens per sample, prompt included (0: the training length)')
p.add_argument('--steps', type=int, default=0, help='diffusion sampling steps (0: one per token); ignored by AR')
p.add_argument('--temperature', type=float, default=1.0)
p.add_argument('--top-p', type=float, default=1.0, help='nucleus sampling mass (1: off)')
p.add_argument('--seed', type=int, default=0)
p.add_argument('--noise-removal', default=None, help="mdlm/duo final step: ancestral | greedy | none")
p.add_argument('--alpha0', type=float, default=None, help='eso: alpha_0 at sampling time (default: as trained)')
p.add_argument('--no-cache', action='store_true', help='disable the KV / no-change cache (same samples, slower)')
p.add_argument('--show-steps', type=int, default=0, help='print the intermediate state every N network calls')
p.add_argument('--device', default='cpu' if not torch.cuda.is_available() else 'cuda')
args = p.parse_args()

model, ckpt = load_checkpoint(args.ckpt, args.device)
family = get_family(ckpt['family'])
tokenizer = data.get_tokenizer(ckpt['tokenizer'])
mask_id = model.cfg.mask_id
length = args.length or model.cfg.seq_len

# the prompt: AR starts from BOS; diffusion families from nothing (all noise)
ids = tokenizer.encode(args.prompt) if args.prompt else []
if getattr(family, 'BOS_PREFIX', False):
    ids = [tokenizer.bos] + ids
if len(ids) >= length:
    p.exit(2, f"error: the prompt is {len(ids)} tokens but samples are {length} long: shorten --prompt or raise "
              f"--length\n")
prompt = torch.tensor(ids, dtype=torch.long) if ids else None

# family-specific keywords, passed only where the family's sampler takes them
wanted = dict(noise_removal=args.noise_removal, use_cache=False if args.no_cache else None, alpha0=args.alpha0)
accepted = inspect.signature(family.sample).parameters
for k, v in wanted.items():
    if v is not None and k not in accepted:
        p.exit(2, f"error: --{k.replace('_', '-')} does not apply to the {ckpt['family']} family\n")
kwargs = {k: v for k, v in wanted.items() if v is not None}
if 'alpha0' in accepted and 'alpha0' not in kwargs and 'alpha0' in ckpt['options']:
    kwargs['alpha0'] = ckpt['options']['alpha0']  # sample as trained unless --alpha0 says otherwise

calls = 0


def show(x):
    global calls
    calls += 1
    if args.show_steps and calls % args.show_steps == 0:
        print(f"[call {calls}] {tokenizer.decode(x[0].tolist(), mask_id=mask_id)!r}")


print(f"{ckpt['family']} {ckpt['options']} | {ckpt['args']['size']} | trained {ckpt.get('step')} steps, "
      f"val {ckpt.get('val_loss', float('nan')):.4f} | {kwargs}")
t0 = time.time()
x, nfe = family.sample(model, args.num_samples, length, steps=args.steps or None, prompt=prompt,
                       temperature=args.temperature, top_p=args.top_p,
                       generator=torch.Generator(args.device).manual_seed(args.seed), callback=show, **kwargs)
dt = time.time() - t0
for i in range(args.num_samples):
    print(f"\n=== sample {i} ===\n{tokenizer.decode(x[i].tolist(), mask_id=mask_id)}")
print(f"\n{nfe} network calls, {dt:.2f}s, {args.num_samples * length / dt:,.0f} tok/s")
