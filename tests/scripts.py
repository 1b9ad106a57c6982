"""Running train.py and sample.py as a user would, from the tests (import with `from scripts import run_script`):
plain subprocesses, a fast fork-per-job runner for tables of bad inputs, and deterministic interruptions (SIGKILL or
SIGINT at a given batch, a full disk at a given save) that need no test hooks in the production code."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')

# Runs many script invocations for the price of one Python start: a driver imports torch and nanodllm once, then
# forks one child per job; the child runs the script with runpy exactly as `python script args` would (SystemExit
# gives the exit code, any other exception prints its traceback and exits 1) with stdout/stderr sent to files.
_DRIVER = r'''
import json, os, runpy, signal, sys, tempfile, time, traceback
import torch, nanodllm.common, nanodllm.data, nanodllm.checkpoint, nanodllm.evaluate, nanodllm.rundir  # preload
jobs, results = json.load(sys.stdin), []
for job in jobs:
    out, err = tempfile.mkstemp()[1], tempfile.mkstemp()[1]
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        signal.alarm(120)                                    # a job that hangs dies instead of hanging the suite
        os.chdir(job['cwd'])
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
        sys.argv = [job['script']] + job['args']
        code = 0
        try:
            runpy.run_path(job['script'], run_name='__main__')
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append(dict(code=os.waitstatus_to_exitcode(status), stdout=open(out, errors='replace').read(),
                        stderr=open(err, errors='replace').read(), seconds=time.time() - t0))
    os.remove(out); os.remove(err)
print(json.dumps(results))
'''


def run_many(jobs, timeout=900):
    """jobs: [(script name in ROOT, [args], cwd)] -> [dict(code, stdout, stderr)], in order (see _DRIVER)."""
    payload = json.dumps([dict(script=os.path.join(ROOT, s), args=[str(a) for a in args], cwd=str(cwd))
                          for s, args, cwd in jobs], ensure_ascii=False)
    out = subprocess.run([sys.executable, '-c', _DRIVER], input=payload, capture_output=True, text=True, env=ENV,
                         timeout=timeout, errors='surrogateescape')
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# Runs a script after monkeypatching data.Loader.next_batch so that its call number `at` first sends this process
# `signal` (SIGKILL: a crash; SIGINT: Ctrl-C): deterministic interruptions without test hooks in train.py.
_KILL_AT = r'''
import os, runpy, signal, sys
from nanodllm import data
at, sig = int(sys.argv[1]), getattr(signal, sys.argv[2])
next_batch, calls = data.Loader.next_batch, [0]
def patched(self):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), sig)
    return next_batch(self)
data.Loader.next_batch = patched
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''

# Runs a script with torch.save failing (half a file written, then "No space left on device") from call `at` on.
_DISK_FULL_AT = r'''
import errno, runpy, sys, torch
at, save, calls = int(sys.argv[1]), torch.save, [0]
def full(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] < at:
        return save(obj, f, *args, **kwargs)
    f.write(b'half a checkpoint')
    raise OSError(errno.ENOSPC, 'No space left on device')
torch.save = full
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def run_script(script, args, cwd, kill_at=None, signal_name='SIGKILL', disk_full_at=None, timeout=300):
    """`python script args` in cwd (a subprocess), optionally interrupted at a batch or with a full disk."""
    if kill_at is not None:
        pre = ['-c', _KILL_AT, str(kill_at), signal_name]
    elif disk_full_at is not None:
        pre = ['-c', _DISK_FULL_AT, str(disk_full_at)]
    else:
        pre = []
    cmd = [sys.executable] + pre + [os.path.join(ROOT, script)] + [str(a) for a in args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout)


def make_corpus(path, n_words=8000, seed=0):
    """~40 KB of text: enough for a few batches of 32-byte blocks, train and val."""
    import torch
    words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings'.split()
    g = torch.Generator().manual_seed(seed)
    path.write_text(' '.join(words[i] for i in torch.randint(0, len(words), (n_words,), generator=g).tolist()))
    return str(path)
