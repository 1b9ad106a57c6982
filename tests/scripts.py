"""Running train.py and sample.py as a user would, from the tests: plain subprocesses (`run_script`), a fast
fork-per-job runner (`Runner`, the `runner` fixture), and deterministic interruptions (SIGKILL or SIGINT at a given
batch, a full disk or a crash at a given checkpoint write, a write that waits for the training) that need no test
hooks in the production code.

Batches are counted at data.Loader.next_batch, which train.py calls one micro-batch ahead (it prefetches the next
one right after the current forward): call k + 1 loads micro-batch k + 1 during micro-batch k. Checkpoints are
written by torch.save in train.py's background writer thread."""
import json
import os
import subprocess
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')

# A driver that imports torch, nanodllm and torch._dynamo (the first AdamW imports it: ~4 s) once, then runs each job
# (one JSON line on stdin) in a forked child, exactly as `python script args` would: SystemExit gives the exit code,
# any other exception prints its traceback and exits 1; stdout and stderr go to files; one JSON line comes back.
_DRIVER = r"""
import json, os, runpy, signal, sys, tempfile, traceback
import threading, time
import torch, torch._dynamo, nanodllm.common, nanodllm.data, nanodllm.checkpoint, nanodllm.validation, nanodllm.rundir
import nanodllm.parallel, nanodllm.loop, nanodllm.memory
for line in sys.stdin:
    job = json.loads(line)
    out, err = tempfile.mkstemp()[1], tempfile.mkstemp()[1]
    pid = os.fork()
    if pid == 0:
        signal.alarm(job['timeout'])                         # a job that hangs dies instead of hanging the suite
        os.chdir(job['cwd'])
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
        sys.argv = [job['script']] + job['args']
        next_batch, calls, sig = nanodllm.data.Loader.next_batch, [0], getattr(signal, job['signal'])
        def patched(self):                                   # count the batches; send a signal at the kill_at calls
            calls[0] += 1
            if calls[0] in job['kill_at']:
                if sig == signal.SIGKILL:                    # a crash between two checkpoint writes, not in one:
                    for t in threading.enumerate():          # the background write in progress finishes first
                        if t.name == nanodllm.checkpoint.BackgroundWriter.THREAD_NAME:
                            t.join()
                os.kill(os.getpid(), sig)
            return next_batch(self)
        nanodllm.data.Loader.next_batch = patched
        save, saves = torch.save, [0]
        def patched_save(obj, f, *args, **kwargs):
            saves[0] += 1
            if saves[0] == job['save_waits_at']:             # this write waits until the training has fetched 2
                until = calls[0] + 2                         # more batches: it only can if it runs in the background
                deadline = time.time() + 60
                while calls[0] < until:
                    if time.time() > deadline:
                        raise RuntimeError('the training waited for the checkpoint write')
                    time.sleep(0.005)
            if saves[0] == job['crash_in_save_at']:          # a crash half-way through this write
                f.write(b'half a checkpoint'); f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            if job['disk_full_at'] and saves[0] >= job['disk_full_at']:  # this write and every later one fail
                f.write(b'half a checkpoint')
                raise OSError(28, 'No space left on device')
            return save(obj, f, *args, **kwargs)
        torch.save = patched_save
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
    result = dict(returncode=os.waitstatus_to_exitcode(status), stdout=open(out, errors='replace').read(),
                  stderr=open(err, errors='replace').read())
    os.remove(out); os.remove(err)
    print(json.dumps(result), flush=True)
"""


class Runner:
    """Runs train.py / sample.py for the price of a fork instead of a Python start (see _DRIVER); one per test session
    (the `runner` fixture in conftest.py). runner(script, args, cwd, ...) -> an object with returncode, stdout,
    stderr, like subprocess.run. kill_at / signal_name as in run_script, except that a SIGKILL waits for the
    checkpoint write in progress (a crash between writes, deterministically); disk_full_at=N: the N-th torch.save
    and every later one fail half-way with "No space left on device"; crash_in_save_at=N: the N-th torch.save
    writes half a checkpoint and SIGKILLs the process; save_waits_at=N: the N-th torch.save waits until the
    training has fetched two more batches (fails after 60 s)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, '-c', _DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=ENV)

    def __call__(self, script, args, cwd, kill_at=(), signal_name='SIGKILL', disk_full_at=None, crash_in_save_at=None,
                 save_waits_at=None, timeout=300):
        job = dict(script=os.path.join(ROOT, script), args=[str(a) for a in args], cwd=str(cwd), kill_at=list(kill_at),
                   signal=signal_name, disk_full_at=disk_full_at, crash_in_save_at=crash_in_save_at,
                   save_waits_at=save_waits_at, timeout=timeout)
        self.proc.stdin.write(json.dumps(job) + '\n')      # ensure_ascii: surrogates in args travel as escapes
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, 'the test driver died'
        return types.SimpleNamespace(**json.loads(line))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# Runs a script after monkeypatching data.Loader.next_batch so that its calls number `at` first send this process
# `signal` (SIGKILL: a crash; SIGINT: Ctrl-C): deterministic interruptions without test hooks in train.py.
_KILL_AT = r'''
import os, runpy, signal, sys
from nanodllm import data
at, sig = [int(a) for a in sys.argv[1].split(',')], getattr(signal, sys.argv[2])
next_batch, calls = data.Loader.next_batch, [0]
def patched(self):
    calls[0] += 1
    if calls[0] in at:
        os.kill(os.getpid(), sig)
    return next_batch(self)
data.Loader.next_batch = patched
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''

def run_script(script, args, cwd, kill_at=(), signal_name='SIGKILL', processes=1, timeout=300):
    """`python script args` in cwd, a real subprocess: optionally sent `signal_name` at the next_batch calls
    `kill_at` (counted from 1), or run as `processes` torchrun processes (CPU, gloo)."""
    if processes > 1:
        pre = ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}']
    elif kill_at:
        pre = ['-c', _KILL_AT, ','.join(map(str, kill_at)), signal_name]
    else:
        pre = []
    cmd = [sys.executable] + pre + [os.path.join(ROOT, script)] + [str(a) for a in args]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if processes > 1 and out.returncode and 'address already in use' in out.stderr.lower():  # a port race, not a bug
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout)
    return out


def make_corpus(path, n_words=8000, seed=0):
    """~40 KB of text: enough for a few batches of 32-byte blocks, train and val."""
    import torch
    words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings'.split()
    g = torch.Generator().manual_seed(seed)
    path.write_text(' '.join(words[i] for i in torch.randint(0, len(words), (n_words,), generator=g).tolist()))
    return str(path)
