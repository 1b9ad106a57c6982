#!/usr/bin/env bash
# Duo few-step generation on CPU (issue 20): the exact commands behind benchmarks/results/duo_distill_cpu/.
#   bash benchmarks/duo_distill_cpu.sh      # ~25 min of CPU on a quiet 2-core machine; runs already finished are kept
# 1) a judge (AR nano, 800 steps), base Duo, MDLM, Duo + curriculum (3 seeds each for the comparison; femto, 5e11
#    FLOPs, the CPU sweep's settings), the curriculum with the authors' gamma range taken literally;
# 2) DCD from the base Duo: 6 rounds of 100 steps, T = 256 (dt = 1/256 ... 1/8), constant lr 3e-4; and 4 rounds of
#    250 steps, T = 32 (dt = 1/32 ... 1/4), lr 1e-3;
# 3) quality against steps after each round (benchmarks/duo_distill_cpu.py), the frontier points (sweep.py --pareto
#    --ckpts), the base at lower temperatures (the entropy control).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${RUNS:-runs/dd}; OUT=${OUT:-benchmarks/results/duo_distill_cpu}
done_() { [ -f "$1/results.json" ] && grep -q '"completed"' "$1/results.json"; }
train() { local dir=$1; shift; done_ "$dir" || python train.py "$@" --out-dir "$dir" --overwrite; }
C="--data shakespeare --tokenizer byte --seq-len 128 --batch-size 8 --lr 3e-3 --eval-sequences 512 --eval-every 1000 --log-every 200 --size femto --flops 5e11"
train $R/judge --family ar --size nano --seq-len 128 --batch-size 16 --lr 3e-3 --max-steps 800 --seed 7 --eval-every 800 --log-every 100
train $R/duo $C --family duo --seed 1
train $R/mdlm $C --family mdlm --seed 1
train $R/duo_curriculum_authors_gamma $C --family duo --seed 1 --curriculum --gamma -3.5 -1.75
for s in 1 2 3; do
  sfx=$([ $s = 1 ] && echo "" || echo "_s$s")
  train $R/duo_curriculum$sfx $C --family duo --seed $s --curriculum
  [ $s = 1 ] || train $R/duo$sfx $C --family duo --seed $s
done
D="--data shakespeare --tokenizer byte --seq-len 128 --batch-size 8 --eval-sequences 512 --size femto --seed 1 --family duo --distill-from $R/duo/ckpt.pt --log-every 50"
train $R/dcd $D --distill-every 100 --distill-T 256 --max-steps 600 --lr 3e-4 --min-lr 3e-4 --warmup-steps 20 --eval-every 100
train $R/dcd_T32 $D --distill-every 250 --distill-T 32 --max-steps 1000 --lr 1e-3 --min-lr 1e-3 --warmup-steps 20 --eval-every 250
python benchmarks/duo_distill_cpu.py --judge $R/judge/ckpt.pt --dcd $R/dcd --mdlm $R/mdlm/ckpt.pt \
  --plain $R/duo,$R/duo_s2,$R/duo_s3 --curriculum $R/duo_curriculum,$R/duo_curriculum_s2,$R/duo_curriculum_s3 --out $OUT
python benchmarks/duo_distill_cpu.py --judge $R/judge/ckpt.pt --dcd $R/dcd_T32 --mdlm $R/mdlm/ckpt.pt --out $OUT/dcd_T32
python sweep.py --pareto --judge $R/judge/ckpt.pt --ckpts duo=$R/duo/ckpt.pt,duo_dcd=$R/dcd/ckpt.pt,mdlm=$R/mdlm/ckpt.pt \
  --steps 4,8,16,32 --num-samples 64 --out-dir $R/pareto
mkdir -p $OUT/pareto && cp $R/pareto/pareto/* $OUT/pareto/
python benchmarks/duo_distill_temperature.py   # -> $OUT/temperature_control.jsonl
