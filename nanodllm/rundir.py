"""The out-dir of one training run: who may use it, what may be replaced, the log, results.json, and how signals end
a run. train.py builds one `RunDir` before any real work.

- One run per out-dir: rank 0 holds an exclusive `fcntl.flock` on <out-dir>/.lock for its whole life (the kernel
  drops it when the process dies, even on kill -9); a second run gets one line naming the holder's pid.
- No lost run: an out-dir that holds a ckpt.pt is refused unless --resume (continue it) or --overwrite (delete it
  and start afresh) is given; nothing is deleted before `begin()`, which train.py calls once every other check
  has passed. The out-dir must be a writable folder: checked by writing a probe file.
- Signals: SIGINT (Ctrl-C) and SIGTERM. During set-up they end the run at once (one line, exit 130, nothing
  written). Once the loop runs (`start_loop`), the first one is only recorded: the loop finishes its step, saves a
  checkpoint, writes results.json with status 'interrupted' and exits 130; a second one stops at once (the last
  checkpoint stays, see checkpoint.atomic_write).
- results.json is written atomically (status 'completed' | 'interrupted' | 'diverged' | 'failed'); `--resume` of a
  finished run rewrites it from the checkpoint if it is missing or damaged (`results_problem`).
- `agree` lets every rank of a DDP/FSDP run stop at the same step (a signal, a failed background checkpoint write)
  with one all-reduce of a CPU tensor: over gloo (a CPU-side group beside NCCL on GPUs), so the loop can call it
  every step without making the host wait for the GPU.
"""
import errno
import fcntl
import glob
import json
import os
import signal
import sys

import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import atomic_write

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class RunDir:
    """<out-dir>: ckpt.pt, log.txt, results.json, .lock. Only rank 0 (master) touches files; every rank catches
    signals. Raises ValueError (one line) when the out-dir cannot or must not be used."""

    def __init__(self, out_dir, resume=False, overwrite=False, master=True):
        self.out_dir, self.master, self.resume = out_dir, master, resume
        self.ckpt_path = os.path.join(out_dir, 'ckpt.pt')
        self.results_path = os.path.join(out_dir, 'results.json')
        self.log_file, self.lock_file = None, None
        self.signal, self.in_loop, self.on_hard_stop = None, False, None
        # every rank builds the RunDir at the same point, so this collective is safe here (before any refusal)
        self.group = dist.new_group(backend='gloo') if dist.is_initialized() and dist.get_backend() != 'gloo' else None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        if master:
            self._claim(resume, overwrite)

    def _claim(self, resume, overwrite):
        out, ckpt = self.out_dir, self.ckpt_path
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"--out-dir {out} is a file, not a folder: pass another --out-dir")
        try:
            os.makedirs(out, exist_ok=True)
            self.lock_file = open(os.path.join(out, '.lock'), 'a+')
        except OSError as e:
            raise ValueError(f"cannot use --out-dir {out}: {e.strerror or e}: pass a folder you can write to") from None
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ValueError(f"cannot lock {out}/.lock: {e.strerror or e}") from None
            self.lock_file.seek(0)
            holder = self.lock_file.read().strip() or 'unknown'
            raise ValueError(f"another run (pid {holder}) is using --out-dir {out} (it holds {out}/.lock): wait for "
                             f"it to finish or stop it, or pass another --out-dir") from None
        self.lock_file.seek(0)
        self.lock_file.truncate()
        self.lock_file.write(f"{os.getpid()}\n")
        self.lock_file.flush()
        try:  # writable? (a probe, so that a read-only folder fails now, not at the first checkpoint)
            atomic_write(os.path.join(out, '.probe'), lambda f: f.write(b'ok'))
            os.remove(os.path.join(out, '.probe'))
        except OSError as e:
            raise ValueError(f"--out-dir {out} is not writable ({e.strerror or e}): fix its permissions or pass "
                             f"another --out-dir") from None
        for pattern in ('ckpt.pt.*.tmp', 'results.json.*.tmp', '.probe.*.tmp'):  # left by a killed run; we hold
            for stale in glob.glob(os.path.join(glob.escape(out), pattern)):     # the lock, so no writer owns them
                os.remove(stale)
        for name in ('ckpt.pt', 'log.txt', 'results.json'):
            path = os.path.join(out, name)
            if os.path.lexists(path) and not os.path.isfile(path):
                raise ValueError(f"{path} is not a regular file: remove it, or pass another --out-dir")
        has_ckpt = os.path.isfile(ckpt)
        if resume and not has_ckpt:
            raise ValueError(f"--resume: there is no {ckpt} to continue: drop --resume to start a new run")
        if has_ckpt and not (resume or overwrite):
            raise ValueError(f"--out-dir {out} already holds a checkpoint ({ckpt}): pass --resume to continue that "
                             f"run or --overwrite to delete it and start afresh (or pass another --out-dir)")

    def begin(self):
        """Call once every check has passed, right before training: from here the out-dir belongs to this run. A new
        run deletes an older run's ckpt.pt and results.json (only reachable with --overwrite, or when there was no
        checkpoint) and starts log.txt afresh; --resume appends to it. Refusals before this point change nothing."""
        if not self.master:
            return
        if not self.resume:
            for path in (self.ckpt_path, self.results_path):
                if os.path.isfile(path):
                    os.remove(path)
        self.log_file = open(os.path.join(self.out_dir, 'log.txt'), 'a' if self.resume else 'w')

    # -------------------------------------------------------------------------
    # log and results

    def log(self, line):
        """rank 0: print a line (through tqdm, so it does not break the progress bar) and append it to log.txt."""
        if self.master:
            tqdm.write(line)
            if self.log_file is not None:
                try:
                    self.log_file.write(line + '\n')
                    self.log_file.flush()
                except OSError as e:  # e.g. a full disk: keep training; a failed save will stop the run cleanly
                    tqdm.write(f"warning: could not write {self.out_dir}/log.txt ({e.strerror or e}): logging to "
                               f"the terminal only", file=sys.stderr)
                    self.log_file = None

    def warning(self, message):
        """One line `warning: ...` on stderr (and in log.txt); the run goes on."""
        line = message if message.startswith('warning:') else f"warning: {message}"
        if self.master:
            tqdm.write(line, file=sys.stderr)
            try:
                self.log_file.write(line + '\n')
                self.log_file.flush()
            except (AttributeError, OSError):
                pass

    def error(self, message):
        """One line `error: ...` on stderr (and in log.txt)."""
        if self.master:
            tqdm.write(f"error: {message}", file=sys.stderr)
            try:
                self.log_file.write(f"error: {message}\n")
                self.log_file.flush()
            except (AttributeError, OSError):  # no log yet, or it cannot be written
                pass

    def results_problem(self):
        """None if results.json is a readable record of a completed run; else what is wrong with it, as the end of
        a sentence ('is missing', 'is not valid JSON', ...). train.py rewrites it then from a finished checkpoint."""
        try:
            with open(self.results_path, 'rb') as f:
                results = json.loads(f.read())
        except FileNotFoundError:
            return "is missing"
        except (OSError, ValueError) as e:  # (UnicodeDecodeError and json's errors are ValueErrors)
            return f"is unreadable ({type(e).__name__})" if isinstance(e, OSError) else "is not valid JSON"
        if not isinstance(results, dict):
            return "is not a JSON object"
        if results.get('status', 'completed') != 'completed':
            return f"says {results.get('status')!r} although the checkpoint is at the last step"
        return None

    def write_results(self, results):
        """rank 0: results.json, atomically. Returns False (after one line on stderr) if it cannot be written."""
        if not self.master:
            return True
        try:
            atomic_write(self.results_path, lambda f: f.write(json.dumps(results, indent=2).encode()))
            return True
        except OSError as e:
            tqdm.write(f"error: could not write {self.results_path}: {e.strerror or e}", file=sys.stderr)
            return False

    # -------------------------------------------------------------------------
    # signals

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if not self.in_loop or self.signal is not None:
            if self.in_loop and self.on_hard_stop is not None:
                self.on_hard_stop()
            if self.master:
                tqdm.write(f"interrupted ({name}): " + ("stopped at once, the last checkpoint is kept" if self.in_loop
                                                       else "stopped during set-up, nothing was trained"),
                           file=sys.stderr)
            self.in_loop = False  # a third signal while unwinding is handled the same way, quietly
            raise SystemExit(EXIT_INTERRUPTED)
        self.signal = name
        if self.master:
            tqdm.write(f"{name}: finishing this step, saving a checkpoint, then stopping (send it again to stop at "
                       f"once)", file=sys.stderr)

    def start_loop(self):
        """From now on the first SIGINT/SIGTERM only asks the loop to stop at the next step boundary."""
        self.in_loop = True

    def stop_requested(self, device=None, ddp=False):
        """Has any rank been asked to stop? Under DDP all ranks agree (see `agree`), so they stop together."""
        return self.agree(ddp, self.signal is not None)[0]

    def agree(self, ddp, *flags):
        """-> for each flag, whether it is True on any rank (every rank must call it with as many flags). Under DDP
        one all-reduce of a CPU tensor over gloo: no GPU work, so the host never waits for the GPU here."""
        if not ddp:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([float(bool(f)) for f in flags])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return tuple(bool(v) for v in t.tolist())
