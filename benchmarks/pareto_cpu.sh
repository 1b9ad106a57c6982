#!/usr/bin/env bash
# The speed-quality Pareto frontier on CPU (issue 13, paper §1.5), measured on the checkpoints of the CPU sweep:
#   1) the judge: an AR model of size tiny (3.70M non-embedding parameters; the sweep's models have 0.09-0.28M),
#      1,500 steps of 16 x 256 Shakespeare bytes (6.1M tokens, ~6 epochs) on the same train/val split as the sweep
#      (nanodllm.data.prepare's defaults), seed 7. ~16 min on 2 quiet cores (micro measured at 0.29-0.32 s/step,
#      tiny at 1.98x micro's step time); skipped once finished, resumed if interrupted;
#   2) sweep.py --pareto on the finished sweep: each family's compute-optimal run at the largest budget that brackets
#      every family's optimum, sampled at every step count (8 ... 128 = L) and, for Eso-LM, alpha0 in {1, 0.5, 0.25}
#      at sampling time, 128 samples per setting in one batch, judged: ~3-5 min;
#   3) the same at every budget (--all-budgets, the paper's figure: the best over the compute-optimal models of all
#      budgets); the rows of step 2 are read back, so only the other budgets' runs are sampled: ~6-10 min;
#   4) the frontier files and the judge's results copied to benchmarks/results/pareto_cpu/.
#
#   python sweep.py                          # first: the CPU sweep (~46 min) -> runs/sweep_cpu
#   bash benchmarks/pareto_cpu.sh            # then: ~25-30 min on 2 quiet cores -> benchmarks/results/pareto_cpu
#   CKPTS=ar=runs/compare/ar/ckpt.pt,mdlm=runs/compare/mdlm-low_var/ckpt.pt,duo=runs/compare/duo/ckpt.pt,\
#   eso=runs/compare/eso-alpha0=1/ckpt.pt bash benchmarks/pareto_cpu.sh   # given checkpoints instead (steps 1, 2, 4)
#                                            # -> runs/pareto_ckpts/pareto, benchmarks/results/pareto_cpu_ckpts
#   SMOKE=1 bash benchmarks/pareto_cpu.sh    # the pipeline in a few minutes: nano judge, `sweep.py --preset quick`,
#                                            # 16 samples; results stay in runs/ (its numbers mean nothing)
#
# Every step can be stopped with Ctrl-C and resumed by running the script again. Knobs (environment): SWEEP (the
# sweep folder), JUDGE (the judge's folder), JUDGE_SIZE, JUDGE_STEPS, NUM_SAMPLES, BATCH, STEPS (default: 8 ... L),
# ALPHA0, RESULTS, CKPTS, OUT (CKPTS only: where pareto/ goes). Measure on a quiet machine: tok/s measures the sampler only if nothing else runs. On a busy
# one set OMP_NUM_THREADS=1 (two threads fighting over loaded cores make every call up to 10x slower).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SMOKE:-0}" = 1 ]; then
  SWEEP=${SWEEP:-runs/sweep_quick}; PRESET=quick; JUDGE=${JUDGE:-runs/judge_smoke}; RESULTS=${RESULTS:-runs/pareto_smoke}
  JUDGE_SIZE=${JUDGE_SIZE:-nano}; JUDGE_STEPS=${JUDGE_STEPS:-300}; NUM_SAMPLES=${NUM_SAMPLES:-16}
else
  results=benchmarks/results/pareto_cpu; [ -n "${CKPTS:-}" ] && results+=_ckpts
  SWEEP=${SWEEP:-runs/sweep_cpu}; PRESET=cpu; JUDGE=${JUDGE:-runs/judge}; RESULTS=${RESULTS:-$results}
  JUDGE_SIZE=${JUDGE_SIZE:-tiny}; JUDGE_STEPS=${JUDGE_STEPS:-1500}; NUM_SAMPLES=${NUM_SAMPLES:-128}
fi
BATCH=${BATCH:-$NUM_SAMPLES}; ALPHA0=${ALPHA0:-1,0.5,0.25}
completed() { python -c "import json, sys; sys.exit(json.load(open(sys.argv[1])).get('status') != 'completed')" "$1" \
  2>/dev/null; }

# 1) the judge (skipped once completed; resumed from its checkpoint if interrupted)
if ! completed "$JUDGE/results.json"; then
  resume=""; [ -f "$JUDGE/ckpt.pt" ] && resume=--resume
  echo "=== judge: AR $JUDGE_SIZE, $JUDGE_STEPS steps -> $JUDGE"
  python train.py --family ar --size "$JUDGE_SIZE" --max-steps "$JUDGE_STEPS" --seed 7 --eval-every 500 \
    --log-every 50 --out-dir "$JUDGE" $resume
fi
if [ "${SMOKE:-0}" = 1 ] && [ -z "${CKPTS:-}" ]; then
  python sweep.py --preset quick --out-dir "$SWEEP"   # resumable: trains only what is missing
fi

# 2), 3) the frontier: the sweep's compute-optimal runs (or CKPTS), rows cached in <out-dir>/pareto/rows.jsonl
common=(--judge "$JUDGE/ckpt.pt" --alpha0 "$ALPHA0" --num-samples "$NUM_SAMPLES" --batch-size "$BATCH")
[ -n "${STEPS:-}" ] && common+=(--steps "$STEPS")
if [ -n "${CKPTS:-}" ]; then
  OUT=${OUT:-runs/pareto_ckpts}
  python sweep.py --pareto --ckpts "$CKPTS" --out-dir "$OUT" "${common[@]}"
else
  OUT=$SWEEP
  python sweep.py --pareto --preset "$PRESET" --out-dir "$OUT" "${common[@]}"
  python sweep.py --pareto --preset "$PRESET" --out-dir "$OUT" --all-budgets "${common[@]}"
fi

# 4) the results: pareto*.{json,png,md} and the judge's results.json
mkdir -p "$RESULTS"
cp "$OUT"/pareto/pareto*.json "$OUT"/pareto/pareto*.png "$OUT"/pareto/pareto*.md "$RESULTS"/
cp "$JUDGE/results.json" "$RESULTS/judge.json"
python - "$RESULTS" <<'EOF'
import glob, json, os, sys
judge = json.load(open(os.path.join(sys.argv[1], 'judge.json')))
print(f"judge: AR {judge['size']}, {judge['steps']} steps, val NLL {judge['val_loss']:.4f} nats/byte "
      f"({judge['seconds'] / 60:.1f} min)")
for path in sorted(glob.glob(os.path.join(sys.argv[1], 'pareto*.json'))):
    res = json.load(open(path))
    ref = res['reference']
    print(f"{os.path.basename(path)}: real text gen PPL {ref['real_ppl']:.2f}, shuffled {ref['shuffled_ppl']:.2f}; "
          f"{len(res['rows'])} settings, {sum(r['seconds'] for r in res['rows']) / 60:.1f} min of sampling")
    for note in res.get('notes', []):
        print(f"  {note}")
print(f"wrote {sys.argv[1]}")
EOF
