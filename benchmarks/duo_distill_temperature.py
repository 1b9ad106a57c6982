"""The entropy control of benchmarks/duo_distill_cpu.sh: the base Duo at 256 steps at temperatures 0.9 and 0.8 (lower
entropy), to read the distilled greedy tail's gen PPL against the base's at a similar entropy."""
import json, sys, torch
sys.path.insert(0, '.')
from nanodllm import evaluate
from nanodllm.checkpoint import load_checkpoint
torch.set_num_threads(1)
judge = evaluate.load_judge('runs/dd/judge/ckpt.pt')
model, ckpt = load_checkpoint('runs/dd/dcd/teacher-round0.pt')
with open('benchmarks/results/duo_distill_cpu/temperature_control.jsonl', 'w') as f:
    for temp in (0.9, 0.8):
        r = evaluate.evaluate_setting(model, ckpt, judge, 64, 128, 256, temperature=temp, seed=0, noise_removal='ancestral')
        r.update(label='base', tail='ancestral', ckpt='runs/dd/dcd/teacher-round0.pt')
        f.write(json.dumps(r) + '\n'); f.flush()
        print(temp, r['gen_ppl'], r['entropy'], flush=True)
