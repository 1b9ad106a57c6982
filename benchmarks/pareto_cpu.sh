#!/usr/bin/env bash
# The speed-quality Pareto frontier on CPU (issue 13, paper §1.5), in three steps:
#   1) a judge: an AR model bigger than the judged ones (size tiny, 2.7M non-embedding parameters vs micro's 1.3M),
#      trained on the same Shakespeare (same train/val split) with another seed;
#   2) the four families at one FLOP budget (benchmarks/compare_families.py, the runs of benchmarks/README.md §1;
#      existing runs in $RUNS/families are reused, so pointing FAMILIES at runs/compare skips this step);
#   3) every family's checkpoint sampled over steps (and Eso-LM's sampling-time alpha0), judged, and the frontier
#      written to $OUT/pareto.{json,png,md}.
#
#   bash benchmarks/pareto_cpu.sh            # the measurement, ~1 h on 2 quiet cores -> benchmarks/results/pareto_cpu
#   SMOKE=1 bash benchmarks/pareto_cpu.sh    # nano models, a few hundred steps, ~5 min: checks the pipeline only
#
# Knobs (environment): RUNS, OUT, FAMILIES (folder of the compare_families runs), JUDGE_SIZE, JUDGE_STEPS,
# NUM_SAMPLES, BATCH, STEPS, ALPHA0. On a busy machine set OMP_NUM_THREADS=1: two threads fighting over loaded
# cores make every sampler call ~50x slower, and the tok/s then measure the load, not the sampler.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SMOKE:-0}" = 1 ]; then
  RUNS=${RUNS:-runs/pareto_smoke}; OUT=${OUT:-benchmarks/results/pareto_cpu_smoke}
  JUDGE_SIZE=${JUDGE_SIZE:-nano}; JUDGE_STEPS=${JUDGE_STEPS:-600}
  FLOPS=8.5e11; FAMILY_SIZE=nano                       # 300 steps of 16 x 256 tokens for a nano model
  NUM_SAMPLES=${NUM_SAMPLES:-16}; BATCH=${BATCH:-16}; STEPS=${STEPS:-8,16,32,64,256}; ALPHA0=${ALPHA0:-1,0.5}
else
  RUNS=${RUNS:-runs/pareto}; OUT=${OUT:-benchmarks/results/pareto_cpu}
  JUDGE_SIZE=${JUDGE_SIZE:-tiny}; JUDGE_STEPS=${JUDGE_STEPS:-1200}
  FLOPS=3e13; FAMILY_SIZE=micro                        # 1,486 steps each, as in benchmarks/README.md §1
  NUM_SAMPLES=${NUM_SAMPLES:-32}; BATCH=${BATCH:-32}; STEPS=${STEPS:-16,32,64,128,256}; ALPHA0=${ALPHA0:-1,0.5,0.25}
fi
FAMILIES=${FAMILIES:-$RUNS/families}

# 1) the judge (skipped if it finished before)
if [ ! -f "$RUNS/judge/results.json" ]; then
  python train.py --family ar --size "$JUDGE_SIZE" --max-steps "$JUDGE_STEPS" --seed 7 --out-dir "$RUNS/judge"
fi

# 2) the four families at one budget (compare_families.py skips runs that have results.json)
python benchmarks/compare_families.py --flops "$FLOPS" --out-dir "$FAMILIES" \
  --only ar,mdlm-low_var,duo,eso-alpha0=1 -- --size "$FAMILY_SIZE"

# 3) the frontier: every checkpoint over the sampler settings, judged; JSON + PNG + markdown table
python -m nanodllm.evaluate --pareto --judge "$RUNS/judge/ckpt.pt" \
  --ckpts "ar=$FAMILIES/ar/ckpt.pt,mdlm=$FAMILIES/mdlm-low_var/ckpt.pt,duo=$FAMILIES/duo/ckpt.pt,\
eso=$FAMILIES/eso-alpha0=1/ckpt.pt" \
  --steps "$STEPS" --alpha0 "$ALPHA0" --num-samples "$NUM_SAMPLES" --batch-size "$BATCH" --out-dir "$OUT"
python - "$RUNS/judge/results.json" "$FAMILIES" <<'EOF'
import json, sys
judge = json.load(open(sys.argv[1]))
print(f"judge: {judge['size']} AR, {judge['steps']} steps, val NLL {judge['val_loss']:.4f} ({judge['seconds']:.0f} s)")
for name in ('ar', 'mdlm-low_var', 'duo', 'eso-alpha0=1'):
    r = json.load(open(f"{sys.argv[2]}/{name}/results.json"))
    print(f"{name}: {r['size']}, {r['steps']} steps, val {r['val_loss']:.4f} ({r['seconds']:.0f} s)")
EOF
