"""Data parallelism for train.py: wrap the model for DDP or FSDP2, switch the gradient reduction off during
gradient accumulation, clip gradients, and gather / scatter full state dicts for checkpoints.

    model = parallel.wrap_model(raw_model, device, fsdp=args.fsdp, compile=args.compile, dtype=dtype)
    optimizer = torch.optim.AdamW(raw_model.parameters(), ...)   # after wrap_model: FSDP shards the parameters
    parallel.set_grad_sync(model, micro_step == grad_accum - 1)  # before each micro-step's backward
    grad_norm = parallel.clip_grad_norm_(raw_model, max_norm)
    finite = parallel.all_finite(raw_model)                      # every rank: the divergence check
    model_sd, optim_sd = parallel.full_state_dict(raw_model, optimizer)   # every rank calls; full dicts on rank 0
    parallel.load_full_state_dict(raw_model, optimizer, ckpt['model'], ckpt['optimizer'])  # every rank

Three modes, one surface:
- one process: the plain model (torch.compile'd if asked);
- DDP (default under torchrun): one full copy per GPU, gradients all-reduced in buckets that the `.grad` tensors
  are views of (`gradient_as_bucket_view`, which saves a gradient-sized copy);
- FSDP2 (`fsdp=True`): `fully_shard` on every block and then on the root, so each rank keeps 1/N of the fp32
  weights, gradients and AdamW states, and all-gathers one block's weights at a time. On GPU with bf16 (or fp16)
  autocast the gathered weights are bf16 and the gradients are reduce-scattered in fp32 (MixedPrecisionPolicy);
  forward inputs are not cast, so the residual stream stays fp32 exactly as under DDP + autocast (model.py keeps
  it fp32). On CPU everything stays fp32.
FSDP modifies the model in place (its parameters become sharded DTensors), so `raw_model` is the sharded model:
evaluation works on every rank as before (each forward all-gathers; with bf16 gathered weights, under autocast as
in training), while anything rank 0 does alone, such as sampling, needs a plain copy (`full_model`).

Checkpoints: `full_state_dict` returns the unsharded model and optimizer state, on CPU, on rank 0 (empty dicts on
the other ranks), through torch.distributed.checkpoint.state_dict with full_state_dict=True, as copies that
training does not touch any more, so that another thread can write them while training goes on. They are the dicts
one process writes with `Model.state_dict()` and `optimizer.state_dict()`, so a checkpoint written under FSDP,
DDP or one process is the same dict, loads into any of them on any number of processes (`load_full_state_dict`,
or plain load_state_dict without FSDP), and sample.py reads its weights directly.
"""
import warnings

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils._pytree import tree_map

from .model import Model


def unwrap(model):
    """The module under the torch.compile and DDP wrappers (for FSDP: the sharded model itself)."""
    while True:
        if isinstance(model, DDP):
            model = model.module
        elif hasattr(model, '_orig_mod'):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def wrap_model(model, device, fsdp=False, compile=False, dtype='float32'):
    """-> the model to train with. `model` (a Model on `device`, initialised identically on every rank) is kept as
    the raw model for evaluation and checkpoints; under FSDP it is sharded in place.

    dtype is the autocast dtype train.py uses ('bfloat16' | 'float16' | 'float32'); under FSDP it becomes the
    dtype of the gathered weights. One process (torch.distributed not initialised): no wrapper, FSDP or not.
    Order: DDP wraps the compiled model (as nanoGPT); FSDP shards first and the sharded model is compiled.
    """
    distributed = dist.is_available() and dist.is_initialized()
    if distributed and fsdp:
        low_precision = dtype in ('bfloat16', 'float16') and device.type == 'cuda'  # autocast runs on GPU only
        shard(model, getattr(torch, dtype) if low_precision else None)
        return torch.compile(model) if compile else model
    if compile:
        model = torch.compile(model)
    if distributed:
        model = DDP(model, device_ids=[device.index] if device.type == 'cuda' else None, gradient_as_bucket_view=True)
    return model


def shard(model, param_dtype=None):
    """FSDP2 in place: fully_shard every block, then the root (embedding, sigma embedder, final layer, head).
    param_dtype (e.g. torch.bfloat16): the dtype weights are gathered in, with gradients reduced in fp32; it needs
    autocast around the forward. Forward inputs are not cast: the residual stream stays fp32."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    # Model returns its logits as a (B, T, V) view of the 2-D head output (model.py writes the mask logit into that
    # output in place); no family writes into the logits in place, so FSDP2's warning about view outputs is moot
    warnings.filterwarnings('ignore', message='FSDP2-wrapped module .* returned a view tensor')
    for block in model.blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def is_fsdp(model):
    return isinstance(unwrap(model), FSDPModule)


def set_grad_sync(model, sync):
    """Reduce gradients across ranks in this micro-step's backward (sync=True, the last micro-step) or only
    accumulate them locally (sync=False). DDP: require_backward_grad_sync (no context manager needed, as nanoGPT);
    FSDP: set_requires_gradient_sync, which keeps unsharded fp32 gradients until the reducing micro-step.
    Nothing to do for one process."""
    if isinstance(model, DDP):
        model.require_backward_grad_sync = sync
    elif is_fsdp(model):
        unwrap(model).set_requires_gradient_sync(sync)


def clip_grad_norm_(model, max_norm):
    """Clip the global gradient norm to max_norm (inf: only measure it) -> the norm before clipping, a 0-d tensor.
    Under FSDP the gradients are sharded DTensors: torch reduces the per-shard norms across ranks, so the result is
    the norm of the full gradient (tests/parallel_worker.py checks it against one process)."""
    norm = torch.nn.utils.clip_grad_norm_(unwrap(model).parameters(), max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def all_finite(model):
    """Whether every weight is finite on every rank (a collective when distributed): the divergence check, which
    under FSDP must look at each rank's shards."""
    local = [q.to_local() if isinstance(q, DTensor) else q for q in unwrap(model).parameters()]
    ok = torch.stack([torch.isfinite(q).all() for q in local]).all().float()
    if dist.is_initialized():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


# -----------------------------------------------------------------------------
# checkpoints: full (unsharded) state dicts, the same in every mode

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(model, optimizer=None):
    """-> (model_state, optimizer_state) unsharded, on CPU, on rank 0; ({}, {}) on the other ranks. A collective
    under FSDP: every rank must call it. The same dicts as `Model.state_dict()` and `optimizer.state_dict()` of
    one process (torch.optim's format, parameters numbered in the optimizer's order), whatever the mode; copies,
    never the training's own tensors (see _copied), so a background thread may write them while training goes on."""
    model = unwrap(model)
    model_state = get_model_state_dict(model, options=FULL)
    optim_state = {}
    if optimizer is not None and optimizer.state:
        optim_state = get_optimizer_state_dict(model, optimizer, options=FULL)  # {} on ranks other than 0
        optim_state = _keyed_by_index(optim_state) if optim_state else {}
    elif optimizer is not None:  # before the first step: nothing to gather (and torch would fake a step)
        optim_state = optimizer.state_dict()
    if dist.is_initialized() and dist.get_rank() != 0:
        return {}, {}
    return _copied((model_state, optim_state), model, optimizer)


def _copied(state, model, optimizer=None):
    """Clone the tensors of `state` that are the training's own. torch's gather "offloads to CPU" with .to('cpu'),
    which returns a CPU tensor itself: on CPU (and for AdamW's step counters, CPU tensors even on a GPU) the state
    dict would hold the live weights and optimizer states, which the next optimizer step changes in place. Tensors
    gathered from shards or copied from a GPU are already new: they are not copied again (22 GB at 1.7B)."""
    live = list(model.parameters()) + list(model.buffers())
    if optimizer is not None:
        live += [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    live = {(q.to_local() if isinstance(q, DTensor) else q).untyped_storage().data_ptr()
            for q in live if q.device.type == 'cpu'}
    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in live
                    else t, state)


def load_full_state_dict(model, optimizer=None, model_state=None, optim_state=None):
    """Load full states (from `full_state_dict` or a plain `state_dict()`, written by any number of processes) into
    the model and / or the optimizer, sharded or not; None skips one. A collective under FSDP: every rank passes
    the full dicts (torch.load(..., mmap=True) keeps that cheap). The optimizer must have been built after
    wrap_model, over the model's parameters (FSDP replaces them by their shards)."""
    model = unwrap(model)
    options = StateDictOptions(full_state_dict=True)
    if model_state is not None:
        set_model_state_dict(model, dict(model_state), options=options)  # a copy: torch swaps the values in place
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, _keyed_by_name(model, optimizer, optim_state), options=options)


def _keyed_by_index(state):
    """torch.distributed.checkpoint's optimizer state (keyed by parameter name) -> torch.optim's (numbered)."""
    index = {name: i for i, name in enumerate(name for g in state['param_groups'] for name in g['params'])}
    return {'state': {index[name]: s for name, s in state['state'].items()},
            'param_groups': [dict(g, params=[index[name] for name in g['params']]) for g in state['param_groups']]}


def _keyed_by_name(model, optimizer, state):
    """torch.optim's optimizer state (numbered in the optimizer's parameter order) -> keyed by parameter name."""
    names = {id(q): name for name, q in model.named_parameters()}
    order = [names[id(q)] for g in optimizer.param_groups for q in g['params']]
    return {'state': {order[i]: dict(s) for i, s in state['state'].items()},
            'param_groups': [dict(g, params=[order[i] for i in g['params']]) for g in state['param_groups']]}


def full_model(model, device):
    """A plain, unsharded copy of a (possibly sharded) model on rank 0, e.g. for sampling alone; None on the other
    ranks. A collective under FSDP: every rank must call it. Without FSDP: the raw model itself."""
    model = unwrap(model)
    if not is_fsdp(model):
        return model
    state, _ = full_state_dict(model)
    if dist.get_rank() != 0:
        return None
    copy = Model(model.cfg).to(device)
    copy.load_state_dict(state)
    copy.activation_checkpointing = False
    return copy.train(model.training)
