"""Train every family at one FLOP budget on the bundled Shakespeare and tabulate the validation losses.

    python benchmarks/compare_families.py --flops 3e13 --out-dir runs/compare      # ~45 min on 2 CPU cores

Each run is `train.py --flops <budget>` with the same size, data, batch and seed, so every family takes the same
number of steps. A finished run (results.json with status 'completed') is not trained again; an unfinished one
is resumed from its checkpoint. Prints a markdown table; the recorded results are in benchmarks/README.md.
"""
import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = {  # name -> train.py flags
    'ar': ['--family', 'ar'],
    'mdlm-low_var': ['--family', 'mdlm', '--loss', 'low_var'],
    'mdlm-elbo': ['--family', 'mdlm', '--loss', 'elbo'],
    'duo': ['--family', 'duo'],
    'eso-alpha0=1': ['--family', 'eso', '--alpha0', '1'],
    'eso-alpha0=0.5': ['--family', 'eso', '--alpha0', '0.5', '--batch-split', '0.5'],
}

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--flops', default='3e13', help='training FLOP budget of every run')
p.add_argument('--out-dir', default='runs/compare')
p.add_argument('--only', default='', help='comma-separated subset of: ' + ', '.join(RUNS))
p.add_argument('train_args', nargs='*', help='extra train.py flags, after --, e.g. -- --size tiny')
args = p.parse_args()
common = ['--size', 'micro', '--batch-size', '16', '--seq-len', '256', '--eval-sequences', '640', '--eval-every', '500',
          '--flops', args.flops] + args.train_args

rows = []
for name, flags in RUNS.items():
    if args.only and name not in args.only.split(','):
        continue
    out = os.path.join(args.out_dir, name)
    results = os.path.join(out, 'results.json')
    if not os.path.exists(results) or json.load(open(results)).get('status') != 'completed':
        print(f"=== {name}", flush=True)
        resume = ['--resume'] if os.path.exists(os.path.join(out, 'ckpt.pt')) else []
        subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + common + flags + ['--out-dir', out] + resume,
                       check=True)
    with open(os.path.join(out, 'results.json')) as f:
        rows.append((name, json.load(f)))

print('\n| run | validation loss (nats/token) | bound | ppl | steps | tokens | train FLOPs | seconds |')
print('|---|---|---|---|---|---|---|---|')
for name, r in rows:
    bound = 'NLL' if r['family'] == 'ar' or r['options'].get('alpha0') == 0 else 'NELBO (upper bound)'
    print(f"| {name} | {r['val_loss']:.4f} | {bound} | {math.exp(r['val_loss']):.2f} | {r['steps']} | "
          f"{r['tokens']:,} | {r['train_flops']:.2e} | {r['seconds']:.0f} |")
