"""The CPU study's frontier under a real judge LM, SmolLM2-135M-Instruct (the GGUF of tests/fetch_judge.sh), on the
compute-optimal checkpoints of one budget of the CPU sweep: what `sweep.py --pareto --judge gguf:FILE --budget B`
does, except that the judge is loaded once and each checkpoint is measured as soon as its training completes (on a
loaded 2-core machine the judge takes ~3.5 min to load and ~2 min per setting of 32 samples), into the same rows
cache (<sweep>/pareto/rows.jsonl), so that `sweep.py --pareto` with the same flags reads every row back.

    bash tests/fetch_judge.sh
    python benchmarks/pareto_smollm.py --budget 5e11 --steps 8,128 --alpha0 1,0.25 --num-samples 32
    python benchmarks/pareto_judges.py ...       # then: next to the in-domain AR judge's rows
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

from nanodllm import pareto, quality  # noqa: E402

LABELS = {'ar': 'AR', 'mdlm': 'MDLM (low-var)', 'mdlm-elbo': 'MDLM (NELBO)', 'duo': 'Duo', 'eso': 'Eso-LM'}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sweep', default='runs/sweep_cpu')
    p.add_argument('--runs', default='duo_zepto_5e+11,mdlm_atto_5e+11,mdlm-elbo_atto_5e+11,ar_atto_5e+11,'
                   'eso_atto_5e+11', help="the run folders under <sweep>/runs (default: 5e11's compute-optimal runs)")
    p.add_argument('--budget', type=float, default=5e11)
    p.add_argument('--judge', default='gguf:.cache/judge/SmolLM2-135M-Instruct.Q4_1.gguf')
    p.add_argument('--steps', default='8,128')
    p.add_argument('--alpha0', default='1,0.25')
    p.add_argument('--num-samples', type=int, default=32)
    a = p.parse_args()
    steps, alpha0s = [int(s) for s in a.steps.split(',')], [float(s) for s in a.alpha0.split(',')]
    cache = os.path.join(a.sweep, 'pareto', 'rows.jsonl')
    t0 = time.time()
    judge = quality.load_judge(a.judge, 'cpu')
    print(f"judge loaded in {time.time() - t0:.0f} s", flush=True)
    refs, real_reference = {}, pareto.reference

    def reference(*args, **kwargs):  # one process, one reference: computed once, not once per checkpoint
        key = json.dumps([args[1:], kwargs], default=str)
        if key not in refs:
            refs[key] = real_reference(*args, **kwargs)
        return refs[key]
    pareto.reference = reference
    ckpts, todo = [], a.runs.split(',')
    while todo:
        for name in list(todo):
            try:
                r = json.load(open(os.path.join(a.sweep, 'runs', name, 'results.json')))
            except (OSError, ValueError):
                continue
            if r.get('status') != 'completed':
                continue
            family = name.split('_')[0]
            ckpt = (LABELS[family], os.path.join(a.sweep, 'runs', name, 'ckpt.pt'),
                    dict(run=name, size=r['size'], budget=a.budget, params=r['non_embedding_params']))
            t = time.time()
            pareto.run_pareto([ckpt], judge, steps, alpha0s, num_samples=a.num_samples, batch_size=a.num_samples,
                              device=torch.device('cpu'), cache=cache)
            print(f"{name}: measured in {time.time() - t:.0f} s (val loss {r['val_loss']:.4f})", flush=True)
            ckpts.append(ckpt)
            todo.remove(name)
        if todo:
            time.sleep(20)
    order = {n: i for i, n in enumerate(LABELS.values())}
    ckpts.sort(key=lambda c: order[c[0]])
    result = pareto.run_pareto(ckpts, judge, steps, alpha0s, num_samples=a.num_samples, batch_size=a.num_samples,
                               device=torch.device('cpu'), cache=cache)  # every row read back from the cache
    result['notes'] = [f"{c[0]}: {c[2]['run']} (retrained with the sweep's command)" for c in ckpts]
    print('wrote ' + ', '.join(pareto.write_pareto(result, os.path.join(a.sweep, 'pareto'))))
    print(f"all done in {time.time() - t0:.0f} s", flush=True)


if __name__ == '__main__':
    main()
