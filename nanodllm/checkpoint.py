"""Checkpoints: what a ckpt.pt holds, atomic writes, a validated load that never runs code from the file, and the
state that makes `train.py --resume` continue a run bit for bit.

A checkpoint is a dict of tensors and plain Python types only (dict, list, tuple, str, int, float, bool, None);
`save_checkpoint` refuses anything else and every load uses torch.load(weights_only=True), so a crafted file can
never execute code. Keys (version 2):
  nanodllm_checkpoint  2 (version 1, written before the RNG state was saved, can be sampled from, not resumed)
  family, options, tokenizer, model_config, model    what sample.py needs to rebuild and run the model
  step, val_loss, dtype, args, run_info              where it comes from (args: the train.py flags, as a dict)
  data_kind, init_from                               'text' | 'records' (prompt/response rows: sample.py's --prompt
                                                     form); a fine-tune's start {path, step, val_loss, data} or None
  optimizer, scaler, loader, rng, layout, data_sha256, train_seconds   what --resume needs:
    rng = one {'cpu', 'cuda'} generator state per rank (rank order); layout = {batch_size, micro_batch_size,
    world_size}; loader = the data position (nanodllm.data.Loader.state_dict()).
The same dict whether one process, DDP or FSDP wrote it (nanodllm/parallel.py gathers the full state), so any of
them, on any number of processes, resumes it. train.py writes it in a background thread (`BackgroundWriter`).
"""
import os
import pickle
import secrets
import shutil
import threading
from collections import OrderedDict
from dataclasses import asdict, fields

import torch
import torch.distributed as dist
from torch.torch_version import TorchVersion

from .config import ModelConfig
from .families import FAMILIES
from .model import Model

VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, unsafe, corrupt, edited or from another run): a one-line message."""


# -----------------------------------------------------------------------------
# writing

def atomic_write(path, write):
    """write(f) into a temporary file with a unique name (pid + random) next to `path`, fsync it, then rename it over
    `path`. On any failure (disk full, permission, a directory at `path`, Ctrl-C) the temporary file is removed and
    `path` is untouched; the error is re-raised. Two writers never rename each other's file."""
    path = os.path.abspath(path)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def check_plain(obj, where='checkpoint'):
    """Raise TypeError unless obj holds only tensors and plain Python types (what weights_only=True can load)."""
    if type(obj) in (torch.Tensor, str, bool, int, float, type(None)):  # exact types: no numpy scalar, no Parameter
        return
    if type(obj) in (dict, OrderedDict, list, tuple):  # OrderedDict: what state_dict() returns
        for k, v in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
            if isinstance(obj, dict):
                check_plain(k, f"{where} key")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}: checkpoints hold only tensors and "
                    f"plain Python types (convert it, e.g. float(x) or vars(args))")


def save_checkpoint(path, ckpt):
    """Atomically write a checkpoint (see atomic_write): a crash or a full disk never destroys the last good one."""
    check_plain(ckpt)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: torch.save(ckpt, f))


def make_checkpoint(model, cfg, args, family_name, options, tokenizer_name, **extra):
    """The checkpoint dict (plain types only): model weights and config, family, options, tokenizer, the train.py
    flags (`args`: an argparse Namespace or a dict) and whatever `extra` train.py adds (step, optimizer, rng, ...).
    model: a Model, or its full state dict (what parallel.full_state_dict gathers from a sharded model)."""
    args = dict(vars(args) if not isinstance(args, dict) else args)
    weights = model.state_dict() if isinstance(model, torch.nn.Module) else model
    ckpt = dict(nanodllm_checkpoint=VERSION, model=weights, model_config=asdict(cfg), family=family_name,
                options=dict(options), tokenizer=tokenizer_name, args=args, **extra)
    check_plain(ckpt)
    return ckpt


class BackgroundWriter:
    """Writes checkpoints in a background thread, one at a time, while training goes on (rank 0 of train.py).

    What the other ranks wait for is only the gather of the state into CPU memory (parallel.full_state_dict); the
    slow part, serialising and fsyncing gigabytes (~22 GB at 1.7B), happens here. The write is `save_checkpoint`
    as before: atomic, so a failure (full disk, permissions) or a crash leaves the previous checkpoint untouched.
    An error is kept, not raised in the thread, and reported at the next check: `failed()` without waiting (every
    step), `failed(wait=True)` before the next write, and `wait()`, which returns it as one line, before the
    process exits. The state handed over must be a copy no one modifies any more (full_state_dict's are)."""

    THREAD_NAME = 'nanodllm-checkpoint-writer'

    def __init__(self):
        self.thread, self.error, self.path = None, None, None

    def start(self, path, ckpt):
        """Write ckpt to path in the background, after the write in progress (if any) has finished."""
        if self.thread is not None:
            self.thread.join()
        self.path = path
        self.thread = threading.Thread(target=self._write, args=(path, ckpt), name=self.THREAD_NAME)
        self.thread.start()

    def _write(self, path, ckpt):
        try:
            save_checkpoint(path, ckpt)
        except Exception as e:  # OSError (disk full, permissions) and anything else: one line at the next check
            self.error = e

    def failed(self, wait=False):
        """Whether the last write has finished with an error (wait=True: wait for it to finish first)."""
        if wait and self.thread is not None:
            self.thread.join()
        return self.error is not None and not (self.thread is not None and self.thread.is_alive())

    def wait(self):
        """Wait for the write in progress -> None, or what went wrong in one line (then forgotten)."""
        if self.thread is not None:
            self.thread.join()
        error, self.error = self.error, None
        return None if error is None else save_failure(self.path, error)


def save_failure(path, error):
    """One line for a checkpoint that could not be written: the cause in words (an OSError's own; for anything else,
    e.g. torch's serializer, whose messages are C++ internals, the space left on that disk) and what is on disk now:
    the previous checkpoint, which atomic_write keeps, or none at all (the first save)."""
    if isinstance(error, OSError) and error.strerror:
        cause = error.strerror
    else:
        try:
            cause = f"the write failed ({shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20:.0f} " \
                    f"MiB free on that disk)"
        except OSError:
            cause = "the write failed"
    if os.path.isfile(path):
        return (f"could not save {path}: {cause}: free disk space or fix the permissions; the previous checkpoint is "
                f"kept, continue with --resume")
    return (f"could not save {path}: {cause}: no checkpoint was written; free disk space or fix the permissions, "
            f"then run the same command again")


# -----------------------------------------------------------------------------
# reading and checking

def _expect(ok, path, what):
    if not ok:
        raise CheckpointError(f"{path} is not a valid nanodllm checkpoint: {what}; it is corrupt or was edited: "
                              f"use another checkpoint or retrain")


def _check_options(path, family_name, options):
    _expect(family_name in FAMILIES, path, f"unknown family {family_name!r}")
    expected = FAMILIES[family_name].OPTIONS
    _expect(isinstance(options, dict) and set(options) == set(expected), path,
            f"{family_name} options {options!r} do not have the keys {sorted(expected)}")
    for k, v in options.items():
        if k == 'loss_type':
            _expect(v in ('low_var', 'elbo'), path, f"loss_type {v!r} is not 'low_var' or 'elbo'")
        else:  # alpha0, batch_split: fractions
            _expect(type(v) in (int, float) and 0 <= v <= 1, path, f"{k} = {v!r} is not a number in [0, 1]")


def _unreadable(path):
    """Why torch.load could not read `path`, in one line (never torch's message: it suggests weights_only=False)."""
    try:
        with open(path, 'rb') as f:
            zipped = f.read(4) == b'PK\x03\x04'  # torch.save writes a zip archive
    except OSError:
        zipped = False
    if zipped:
        return (f"{path} is a damaged checkpoint (it may be truncated, e.g. by a full disk or an interrupted copy): "
                f"use another checkpoint or retrain")
    return (f"{path} is not a nanodllm checkpoint (not a file torch.save wrote, or its start is damaged): pass a "
            f"ckpt.pt that train.py wrote in its --out-dir")


def read_checkpoint(path, mmap=False):
    """Load a checkpoint on the CPU with weights_only=True and check it -> the checkpoint dict.
    mmap=True maps the file instead of reading it: every rank of a GPU run loads the same checkpoint, and the page
    cache holds one copy of it for all of them (at 1.7B, 8 ranks would otherwise each hold 22 GB).

    Checks: a regular file; only tensors and plain types (a crafted pickle is refused before any code runs); the
    version; family and options (keys and values); tokenizer; model config; finite float weights (so a diverged or
    edited checkpoint is an error, not NaN samples or the wrong sampler). load_weights then checks the shapes.
    Raises CheckpointError with a one-line message."""
    from . import data  # the tokenizer's vocabulary size must fit the model's
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}: train one with `python train.py --out-dir DIR` and pass "
                              f"DIR/ckpt.pt")
    try:  # TorchVersion (a str subclass) is allowed: checkpoints written before this check stored torch.__version__
        with torch.serialization.safe_globals([TorchVersion]):
            ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met a global it does not allow: code
        if 'unsupported global' in str(e).lower():
            raise CheckpointError(f"refusing to load {path}: it holds Python objects other than tensors and plain "
                                  f"types, so it was not written by nanodllm's train.py (or was tampered with); "
                                  f"nanodllm loads checkpoints with weights_only=True and never runs code from a "
                                  f"file") from None
        raise CheckpointError(_unreadable(path)) from None
    except Exception:  # truncated zip, not a torch file, ...: torch's own message would suggest an unsafe load
        raise CheckpointError(_unreadable(path)) from None
    if not isinstance(ckpt, dict) or ckpt.get('nanodllm_checkpoint') not in (1, VERSION):
        raise CheckpointError(f"{path} is not a nanodllm checkpoint (written by train.py)")
    for key, kind in (('family', str), ('options', dict), ('tokenizer', str), ('model_config', dict),
                      ('model', dict), ('args', dict)):
        _expect(isinstance(ckpt.get(key), kind), path, f"'{key}' is missing or not a {kind.__name__}")
    _check_options(path, ckpt['family'], ckpt['options'])
    _expect(ckpt['tokenizer'] in data.TOKENIZERS, path, f"unknown tokenizer {ckpt['tokenizer']!r}")
    mc = ckpt['model_config']
    names = {f.name for f in fields(ModelConfig)}
    _expect(set(mc) == names and all(type(v) is int and v > 0 for v in mc.values()), path,
            f"model_config {mc} must have the positive integer fields {sorted(names)}")
    _expect(mc['n_embd'] % mc['n_head'] == 0 and (mc['n_embd'] // mc['n_head']) % 2 == 0, path,
            f"n_embd {mc['n_embd']} does not split into {mc['n_head']} heads of an even width")
    n_vocab = data.get_tokenizer(ckpt['tokenizer']).n_vocab
    _expect(mc['vocab_size'] == n_vocab + 1, path, f"vocab_size {mc['vocab_size']} does not fit the "
            f"{ckpt['tokenizer']} tokenizer ({n_vocab} ids + 1 mask id)")
    step = ckpt.get('step', 0)
    _expect(type(step) is int and step >= 0, path, f"step {step!r} is not an integer >= 0")
    for k, v in ckpt['model'].items():
        _expect(isinstance(v, torch.Tensor) and v.is_floating_point(), path, f"weight {k} is not a float tensor")
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{path} has non-finite weights ({k} holds NaN or inf): the run diverged before "
                                  f"it was saved, or the file was edited; use an earlier checkpoint or retrain")
    return ckpt


def _is_fsdp(model):
    """Sharded by FSDP? Only possible under torch.distributed, so sample.py never imports nanodllm.parallel (~1 s)."""
    if not dist.is_initialized():
        return False
    from . import parallel
    return parallel.is_fsdp(model)


def load_weights(model, ckpt, path):
    """model.load_state_dict(ckpt['model']): every weight present, none extra, every shape right; else one line.
    A model sharded by FSDP loads the full weights through parallel.load_full_state_dict (every rank calls it)."""
    try:
        if _is_fsdp(model):
            from . import parallel
            parallel.load_full_state_dict(model, model_state=ckpt['model'])
        else:
            model.load_state_dict(ckpt['model'])
    except (RuntimeError, KeyError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise CheckpointError(f"the weights in {path} do not fit its model_config {ckpt['model_config']} "
                              f"({' '.join(lines[1:3])[:300]}): the checkpoint is corrupt or was edited") from None


def load_checkpoint(path, device='cpu'):
    """Load and check a checkpoint written by train.py -> (model in eval mode on `device`, checkpoint dict).
    Raises CheckpointError (a ValueError) with a one-line message; see read_checkpoint for what is checked."""
    ckpt = read_checkpoint(path)
    model = Model(ModelConfig(**ckpt['model_config']))
    load_weights(model, ckpt, path)
    return model.to(device).eval(), ckpt


def check_init_from(path, family_name, tokenizer_name, mmap=False):
    """`--init-from CKPT`: its family and tokenizer must be this run's (one line each otherwise) -> the checkpoint.
    train.py calls it once before it prepares any data, so that a mismatch is not found after a long tokenization."""
    ckpt = read_checkpoint(path, mmap=mmap)
    if ckpt['family'] != family_name:
        raise CheckpointError(f"--init-from: {path} is a {ckpt['family']} checkpoint but --family is {family_name}: "
                              f"pass --family {ckpt['family']} (a fine-tune keeps the family it was trained as)")
    if ckpt['tokenizer'] != tokenizer_name:
        raise CheckpointError(f"--init-from: {path} was trained with --tokenizer {ckpt['tokenizer']} but "
                              f"--tokenizer is {tokenizer_name}: pass --tokenizer {ckpt['tokenizer']}")
    return ckpt


def init_from(path, model, family_name, size, tokenizer_name, mmap=False, ckpt=None):
    """`train.py --init-from CKPT` (fine-tuning): load CKPT's weights into the freshly built `model` (maybe wrapped
    already: DDP, FSDP, every rank calls it) -> what the new checkpoint records as 'init_from' (path, step,
    val_loss, data of CKPT). The family, the size (the model's shape) and the tokenizer must be CKPT's: one line
    each otherwise. The context length may differ (rotary positions have no table). Nothing else is taken from
    CKPT: the optimizer, the schedule and the step start fresh. `ckpt`: what check_init_from already returned
    (train.py reads CKPT once, before its data), else read and checked here."""
    ckpt = ckpt or check_init_from(path, family_name, tokenizer_name, mmap=mmap)
    shape = ('n_layer', 'n_head', 'n_embd', 'cond_dim', 'vocab_size')
    saved, mine = ckpt['model_config'], asdict(model.cfg)
    if any(saved[k] != mine[k] for k in shape):
        was = ckpt['args'].get('size', '?')
        raise CheckpointError(f"--init-from: {path} is a --size {was} model ({saved['n_layer']} layers, width "
                              f"{saved['n_embd']}, {saved['n_head']} heads) but --size is {size} ({mine['n_layer']} "
                              f"layers, width {mine['n_embd']}, {mine['n_head']} heads): pass --size {was}")
    load_weights(model, ckpt, path)
    return dict(path=os.path.abspath(path), step=ckpt.get('step'), val_loss=ckpt.get('val_loss'),
                data=ckpt['args'].get('data'))


# -----------------------------------------------------------------------------
# exact resume: RNG streams, data position, consistency with the flags

def rng_state(device):
    """This process's generator states: the CPU one and, on a GPU, the current device's."""
    device = torch.device(device)
    return dict(cpu=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state(device) if device.type == 'cuda' else None)


def all_rng_states(device, ddp=False):
    """[rank 0's rng_state, rank 1's, ...] on every rank (a collective under DDP: every rank must call it)."""
    state = rng_state(device)
    if not ddp:
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def set_rng_state(state, device):
    torch.set_rng_state(state['cpu'])
    if torch.device(device).type == 'cuda' and state.get('cuda') is not None:
        torch.cuda.set_rng_state(state['cuda'], torch.device(device))


def resume(path, model, optimizer, scaler, loader, expected, hyper=None, mmap=False):
    """Restore a run from `path` into the freshly built model, optimizer, GradScaler and loader -> (ckpt, note).

    expected: the values this run was started with that must match the checkpoint (family, options, size,
    seq_len, tokenizer, data, seed, batch_size = global sequences per step, model_config, data_sha256); a mismatch
    is a CheckpointError naming the flag. The micro-batch size and the process count may change (the data position
    is converted; `restore_rng` then puts back the random streams). hyper: the optimizer
    settings of this run (betas, weight_decay), applied over the saved ones so that changed flags take effect.
    The model may be wrapped already (DDP, FSDP: every rank calls it) and the optimizer built over its (sharded)
    parameters; a checkpoint from any mode and process count loads (see load_optimizer). mmap: see read_checkpoint."""
    ckpt = read_checkpoint(path, mmap=mmap)
    saved = dict(ckpt['args'], family=ckpt['family'], tokenizer=ckpt['tokenizer'], options=ckpt['options'],
                 model_config=ckpt['model_config'],
                 batch_size=ckpt.get('layout', {}).get('batch_size'), data_sha256=ckpt.get('data_sha256'))
    for k, v in expected.items():
        if k in ('batch_size', 'data_sha256') and (v is None or saved[k] is None):
            continue  # not recorded (older checkpoint, or a data cache without a hash): checked below or trusted
        if saved.get(k) != v:
            flag = {'options': 'family options (--loss/--alpha0/--batch-split)', 'model_config': 'model (--size, '
                    '--seq-len, --tokenizer)', 'data_sha256': 'the corpus behind --data (its content changed)',
                    'batch_size': '--batch-size (global sequences per step)'}.get(k, '--' + k.replace('_', '-'))
            raise CheckpointError(f"--resume: {flag} is {v!r} here but {saved.get(k)!r} in {path}: pass the same "
                                  f"value (only --micro-batch-size, the process count, --max-steps/--flops, the "
                                  f"learning rate and the logging flags may change)")
    if ckpt['nanodllm_checkpoint'] < VERSION or not all(k in ckpt for k in ('optimizer', 'loader', 'rng', 'layout')):
        raise CheckpointError(f"{path} was written by an older nanodllm (no RNG state / data position): it can be "
                              f"sampled from but not resumed; start a new run with --overwrite")
    load_weights(model, ckpt, path)
    load_optimizer(ckpt, model, optimizer, path, hyper)
    try:
        if scaler is not None and ckpt.get('scaler'):
            scaler.load_state_dict(ckpt['scaler'])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the loss scaler state does not fit ({e}); the checkpoint is corrupt or was "
                              f"edited") from None
    # the data position, in sequences of the current epoch, converted to this run's micro-batch x processes
    state, old, new = dict(ckpt['loader']), ckpt['loader']['global_batch'], loader.state_dict()['global_batch']
    if state['step'] * old % new:
        raise CheckpointError(f"--resume: the checkpoint stopped after {state['step'] * old} sequences of its epoch, "
                              f"not a multiple of --micro-batch-size x processes = {new}: use the micro-batch size "
                              f"{ckpt['layout']['micro_batch_size']} of the checkpoint")
    state.update(step=state['step'] * old // new, global_batch=new)
    loader.load_state_dict(state)
    note = ''
    if old != new:
        note = ("; the micro-batch size or the process count changed, so the masks are drawn in another order "
                "(statistically the same run, not bitwise)")
    return ckpt, note


def load_optimizer(ckpt, model, optimizer, path, hyper=None):
    """Load the checkpoint's optimizer state (torch.optim's format, whichever mode wrote it) into `optimizer`,
    built over `model`'s parameters, sharded (FSDP: every rank calls it, parallel.load_full_state_dict) or not
    (optimizer.load_state_dict, as always); then apply `hyper` (this run's betas, weight decay) over the saved
    settings. A state that does not fit is a CheckpointError."""
    try:
        if _is_fsdp(model):
            from . import parallel
            parallel.load_full_state_dict(model, optimizer, optim_state=ckpt['optimizer'])
        else:
            optimizer.load_state_dict(ckpt['optimizer'])
    except (ValueError, KeyError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the optimizer state does not fit this model ({' '.join(str(e).split())[:200]})"
                              f"; the checkpoint is corrupt or was edited") from None
    for group in optimizer.param_groups:
        group.update(hyper or {})


def restore_rng(ckpt, seed, device, rank=0, world=1):
    """Put back this rank's random streams from a checkpoint (call it last, right before the loop, so that nothing
    in the set-up shifts them) -> a note for the log, empty if the streams continue exactly. With another process
    count the streams restart from a seed derived from (seed, step, rank)."""
    if len(ckpt['rng']) == world:
        set_rng_state(ckpt['rng'][rank], device)   # each rank continues its own stream
        return ''
    torch.manual_seed(seed * 1_000_003 + 7919 * ckpt['step'] + rank)
    return (f"the process count changed ({len(ckpt['rng'])} -> {world}), so the random streams (masks, noise) "
            f"restart from a new seed: the continuation is statistically, not bitwise, the same run")
