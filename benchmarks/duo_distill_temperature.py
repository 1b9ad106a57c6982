"""The entropy control of benchmarks/duo_distill_cpu.sh: the base Duo (ancestral) at lower temperatures, at 256 steps
(0.9, 0.8) and at 4, 8, 16 steps (0.9): the distilled model's gen PPL read against the base's at a similar entropy."""
import json, sys, torch
sys.path.insert(0, '.')
from nanodllm import quality
from nanodllm.checkpoint import load_checkpoint
torch.set_num_threads(1)
judge = quality.load_judge('runs/dd/judge/ckpt.pt')
model, ckpt = load_checkpoint('runs/dd/dcd/teacher-round0.pt')
with open('benchmarks/results/duo_distill_cpu/temperature_control.jsonl', 'w') as f:
    for steps, temp in ((256, 0.9), (256, 0.8), (8, 0.9), (16, 0.9), (4, 0.9)):
        r = quality.evaluate_setting(model, ckpt, judge, 64, 128, steps, temperature=temp, seed=0,
                                      noise_removal='ancestral')
        r.update(label='base', tail='ancestral', ckpt='runs/dd/dcd/teacher-round0.pt')
        f.write(json.dumps(r) + '\n'); f.flush()
        print(steps, temp, r['gen_ppl'], r['entropy'], flush=True)
