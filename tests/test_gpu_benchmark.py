"""benchmarks/gpu.py on CPU: the tiny smoke run goes through the same code path as the GPU benchmark and writes its
JSON and markdown; without a GPU and without --cpu-smoke it refuses in one line.

    python -m pytest -q tests/test_gpu_benchmark.py     # ~20 s
"""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'gpu.py')
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


@pytest.mark.slow
def test_cpu_smoke_run_writes_its_results(tmp_path):
    out = subprocess.run([sys.executable, SCRIPT, '--cpu-smoke', '--out-dir', str(tmp_path)], capture_output=True,
                         text=True, timeout=600, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / 'gpu_cpu.json').read_text())
    rows = results['rows']
    # 5 families x micro-batch 2, 4 x checkpointing off, on
    assert len(rows) == 20 and {r['family'] for r in rows} == {'ar', 'mdlm', 'duo', 'eso', 'eso-seq'}
    for r in rows:
        assert r['status'] == 'ok' and r['tokens_per_second'] > 0 and 0 < r['mfu'] < 1
        # the planner against the live-tensor tracker on a 0.3M-parameter model: within 15% (tests/test_memory.py
        # holds the activation ledger to 10%; here the whole step, optimizer and gradients included)
        assert 0.85 < r['planned_over_measured'] < 1.15, r
    peak = {(r['micro_batch_size'], r['activation_checkpointing']): r['peak_bytes']
            for r in rows if r['family'] == 'ar'}
    assert peak[4, True] < peak[4, False]  # checkpointing saves memory
    assert '| ar | 4 |' in (tmp_path / 'gpu_cpu.md').read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without a GPU')
def test_without_a_gpu_it_refuses_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, SCRIPT, '--out-dir', str(tmp_path)], capture_output=True, text=True,
                         timeout=120, env=ENV)
    assert out.returncode == 2 and out.stderr.startswith('error:') and '--cpu-smoke' in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
