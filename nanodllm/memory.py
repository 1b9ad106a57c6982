"""GPU memory of one training step (and of sampling): predicted from the model's shapes (the planner), and measured
on any device (saved-tensor hooks, a live-tensor tracker), so that the prediction is checked on CPU by
tests/test_memory.py.

    python -m nanodllm.flops --size 1.7b --seq-len 2048 --micro-batch-size 4 --nproc 8 --fsdp --family eso

`plan(cfg, family, micro_batch_size, ...)` -> bytes per GPU at the step's peak, by kind:
- parameters, gradients, optimizer: exact, counted on a meta-device Model. fp32 weights and gradients, AdamW's
  exp_avg and exp_avg_sq (+ a 4-byte step per tensor). FSDP keeps 1/N of each (dim-0 shards, padded); DDP
  keeps everything, and its gradients are the all-reduce buckets (`gradient_as_bucket_view`), there all the time.
  FSDP with gradient accumulation also keeps unsharded fp32 gradients between the reducing micro-steps. One plain
  process frees its gradients every step (zero_grad(set_to_none=True)) and allocates them during the backward.
- working_weights: without FSDP under autocast, the bf16 copies of the Linear weights that autocast makes in the
  forward and autograd keeps for the backward; under FSDP, the gathered weights of the root and of two blocks (the
  current and the prefetched one), the root's unsharded gradients and one block's reduce-scatter buffers.
- activations: what the blocks save for the backward (the `BLOCK_SAVED` ledger below), the rotary tables, the
  final LayerNorm and the head input. With activation checkpointing, only each block's input, plus one block
  recomputed at a time in the backward.
- logits: the loss's V-wide tensors: what it saves (AR, MDLM and Eso-LM one fp32 log-softmax, Duo two V-wide
  tensors of its NELBO) and the V-wide temporaries alive at the step's peak (the logits and their gradients).
  Eso-LM's diffusion loss scores only masked positions: `mask_fraction` (default 1, the micro-batch with t near
  1) sets how many; its sequential part (alpha0 < 1) runs 2L tokens per row with a (2L, 2L) attention mask.
- curriculum=True (Duo's Gumbel-softmax curriculum, spec §3.5): the B x L x V soft input, saved for the backward,
  counted with the activations (the embedding's backward comes last).
- total: the sum at the peak of the step, the largest of four candidates (`phase`: the loss in the forward, the
  start of the backward, a block's backward, the optimizer step); it is what torch.cuda.max_memory_allocated
  reports (eager mode; torch.compile fuses element-wise ops and usually saves less). `fits` adds what the
  allocator does not count (CUDA context, cuBLAS and NCCL workspaces, fragmentation).
`sampling_bytes` is the same idea for sampling (sample.py refuses, in one line, a call that will not fit): the KV
cache at its full length, the tokens, and the largest network call.
The ledger is the eager model of today's model.py and family losses; tests/test_memory.py measures a small model
and fails when the code and the ledger drift apart (e.g. a fused loss, a different attention kernel).
"""
import functools
import math
import weakref

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .config import ModelConfig

GB = 1e9
CUDA_RESERVED = 1.5 * GB   # CUDA context, cuBLAS and NCCL workspaces: on the GPU, outside torch's allocator
FRAGMENTATION = 0.05       # the caching allocator reserves more than it hands out

# What one block saves for its backward, per token: (what, dtype, width in units of d). dtype 'fp32' is the
# residual stream and the LayerNorms (always fp32); 'mm' is the matmul dtype (bf16 under autocast, else fp32).
# Also per token: LayerNorm mean and rstd (2 x 2 fp32) and the attention log-sum-exp (one fp32 per head).
BLOCK_SAVED = [
    ('block input x (ln1 input)', 'fp32', 1),
    ('ln1 output (modulate)', 'fp32', 1),
    ('qkv input', 'mm', 1),
    ('qkv output (v is a view of it)', 'mm', 3),
    ('q and k after rotary', 'mm', 2),
    ('attention output', 'mm', 1),
    ('out-projection input (heads merged)', 'mm', 1),
    ('out-projection output (gated)', 'mm', 1),
    ('mid-block x (ln2 input)', 'fp32', 1),
    ('ln2 output (modulate)', 'fp32', 1),
    ('MLP input', 'mm', 1),
    ('MLP hidden (GELU input)', 'mm', 4),
    ('GELU output (second Linear input)', 'mm', 4),
    ('MLP output (gated)', 'mm', 1),
]


def dtype_bytes(dtype):
    """bytes per element of the matmul dtype: 'bfloat16' / 'float16' autocast -> 2, 'float32' -> 4."""
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


# -----------------------------------------------------------------------------
# parameters, gradients, optimizer states (exact)

@functools.lru_cache(maxsize=32)
def _param_table(vocab_size, n_layer, n_head, n_embd, cond_dim):
    """(name, shape, is a Linear weight) of every parameter of a meta-device Model: no memory, exact shapes."""
    from .model import Model
    with torch.device('meta'):
        model = Model(ModelConfig(vocab_size, n_layer, n_head, n_embd, cond_dim))
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    return tuple((name, tuple(p.shape), id(p) in linear) for name, p in model.named_parameters())


def param_table(cfg: ModelConfig):
    return _param_table(cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.cond_dim)


def param_numel(cfg: ModelConfig, which='all'):
    """Parameter count: 'all', 'block' (one block), 'root' (outside the blocks: the FSDP root), 'final' (the
    final LayerNorm, its adaLN and the head: the first gradients of the backward), or
    'linear_weight' (the nn.Linear weights that autocast copies to bf16 and autograd keeps for the backward: all
    but the sigma embedder's first, whose input, a sinusoid, needs no gradient)."""
    keep = {'all': lambda n, lin: True, 'block': lambda n, lin: n.startswith('blocks.0.'),
            'root': lambda n, lin: not n.startswith('blocks.'),
            'final': lambda n, lin: n.split('.')[0] in ('ln_f', 'adaLN_f', 'head'),
            'linear_weight': lambda n, lin: lin and not n.startswith('sigma_map.mlp.0.')}[which]
    return sum(math.prod(shape) for name, shape, lin in param_table(cfg) if keep(name, lin))


def shard_numel(cfg: ModelConfig, nproc=1, fsdp=False):
    """Elements of the weights one rank holds: all of them, or (FSDP) its dim-0 shard of each, padded as FSDP2
    pads: ceil(rows / nproc) rows (exact on rank 0; a last rank may hold fewer)."""
    if not fsdp:
        return param_numel(cfg)
    return sum(-(-shape[0] // nproc) * math.prod(shape[1:]) for _, shape, _ in param_table(cfg))


# -----------------------------------------------------------------------------
# activations: the per-family forward passes and what each saves

def forward_passes(cfg: ModelConfig, family, micro_batch_size, seq_len=None, options=None, mask_fraction=1.0):
    """The forward passes one micro-batch makes, as dicts: n sequences of T tokens; `mask`: the (T, T) boolean
    attention mask of Eso-LM's sequential part; `cond_rows`: rows of sigma conditioning (Duo: one per sequence);
    and the V-wide fp32 rows of the loss (rows of the logits, of their log-softmax, ...): `saved_rows` kept for the
    backward, `forward_rows` and `backward_rows` alive at once beyond those in the forward / backward.
    Raises ValueError for an Eso-LM split that leaves a part empty, as eso.loss does."""
    B, L = micro_batch_size, seq_len or cfg.seq_len
    options = dict(options or {})
    if family == 'ar':  # x0[:, :-1]: saves the log-softmax; the backward holds its gradient and the logits'
        R = B * (L - 1)
        return [dict(n=B, T=L - 1, mask=False, cond_rows=1, saved_rows=R, forward_rows=R, backward_rows=2 * R)]
    if family == 'mdlm':
        R = B * L
        return [dict(n=B, T=L, mask=False, cond_rows=1, saved_rows=R, forward_rows=R, backward_rows=2 * R)]
    if family == 'duo':  # the closed-form NELBO saves log p and log p + log u (softplus's input)
        R = B * L
        return [dict(n=B, T=L, mask=False, cond_rows=B, saved_rows=2 * R, forward_rows=2 * R, backward_rows=2 * R)]
    if family != 'eso':
        raise ValueError(f"unknown family {family!r}")
    alpha0, batch_split = options.get('alpha0', 1.0), options.get('batch_split', 1.0)
    n_diff = B if alpha0 == 1.0 else 0 if alpha0 == 0.0 else int(batch_split * B)
    if 0 < alpha0 < 1 and n_diff in (0, B):
        raise ValueError(f"eso with alpha0 = {alpha0} and batch_split = {batch_split} needs both parts in a "
                         f"micro-batch, but {B} sequences give {n_diff} diffusion rows: pick --batch-split in (0, 1) "
                         f"with 0 < floor(batch_split x micro-batch) < micro-batch (or raise --micro-batch-size)")
    passes = []
    if n_diff:  # diffusion part: the log-softmax of every row is saved (unmasked rows get the ignore index)
        R = n_diff * L
        passes.append(dict(n=n_diff, T=L, mask=False, cond_rows=1, saved_rows=R, forward_rows=R, backward_rows=2 * R))
    if n_diff < B:  # sequential part: 2L tokens per row through the blocks, the head on the z0 half (L rows) only
        R = (B - n_diff) * L
        passes.append(dict(n=B - n_diff, T=2 * L, mask=True, cond_rows=1, saved_rows=R, forward_rows=R,
                           backward_rows=2 * R))
    return passes


def activation_bytes(cfg: ModelConfig, family='ar', micro_batch_size=1, seq_len=None, options=None,
                     dtype='bfloat16', activation_checkpointing=False, mask_fraction=1.0, curriculum=False):
    """Activation memory of one micro-batch, eager -> dict of bytes:
    saved: all the forward leaves for the backward, of which `blocks` (the blocks' share; checkpointed: their
      inputs) and `logits` (the loss's V-wide tensors);
    forward_extra, backward_extra: V-wide temporaries alive beyond `saved` at the forward's / backward's peak;
    recompute: what the backward of one block adds to `saved` minus the loss's tensors (gone by then): its
      gradients, and checkpointed, the block's own saved tensors, recomputed. With two passes (Eso-LM with
      0 < alpha0 < 1) the backward runs the later pass first: meanwhile the earlier pass's loss tensors are still
      saved, and autograd holds each shared weight's gradient from one pass until the other's arrives."""
    f, a = 4, dtype_bytes(dtype)                     # fp32, and the matmul dtype
    d, H, V, c = cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.cond_dim
    hd = d // H
    ledger = sum(w * (f if kind == 'fp32' else a) for _, kind, w in BLOCK_SAVED) * d + 4 * f + f * H  # per token
    out = dict(saved=0, blocks=0, logits=0, forward_extra=0, backward_extra=0, recompute=0)
    passes = forward_passes(cfg, family, micro_batch_size, seq_len, options, mask_fraction)
    for i, p in enumerate(passes):
        N = p['n'] * p['T']                                              # tokens through the model
        layer = N * ledger + (p['T'] ** 2 * a if p['mask'] else 0)       # one block (the mask becomes an mm bias)
        blocks = N * f * d * cfg.n_layer if activation_checkpointing else layer * cfg.n_layer
        per_layer_cond = 0 if activation_checkpointing else cfg.n_layer * (8 * d + c)
        cond = p['cond_rows'] * a * (256 + 4 * c + per_layer_cond + 4 * d + c)  # sigma embedding -> adaLN
        other = N * (hd * f + 8) + N * (2 * f * d + a * d + 2 * f) + cond  # rotary cos/sin, ids, final LN, head input
        logits = p['saved_rows'] * V * f
        out['saved'] += blocks + other + logits + 8 * N                  # + targets
        out['blocks'] += blocks
        out['logits'] += logits
        out['forward_extra'] = max(out['forward_extra'], p['forward_rows'] * V * f)
        out['backward_extra'] = max(out['backward_extra'], p['backward_rows'] * V * f)
        # a block's backward holds gradients too (of the residual, of the MLP hidden, ...): ~ (f + 3 a) d per token
        # two passes (Eso-LM, 0 < alpha0 < 1): the backward runs the later one first; meanwhile the earlier one's
        # loss tensors wait, and so do the later pass's gradients of the head, which autograd sums with the earlier
        # pass's before it accumulates them (a block's, likewise, up to ~40% more on CPU when the blocks dominate)
        waiting = sum(q['saved_rows'] for q in passes[:i]) * V * f + (f * param_numel(cfg, 'final') if i else 0)
        out['recompute'] = max(out['recompute'], (layer if activation_checkpointing else 0) + N * d * (f + 3 * a)
                               + waiting)
    if curriculum:  # Duo's curriculum (spec §3.5): the soft input softmax(w / tau), B x L x V fp32, is saved for
        # the embedding's backward (its matmul with wte); the latent w and w / tau come and go before the forward
        latent = micro_batch_size * (seq_len or cfg.seq_len) * cfg.vocab_size * 4
        out['saved'] += latent   # with the activations: held until the very end of the backward
    return {k: int(v) for k, v in out.items()}


# -----------------------------------------------------------------------------
# the plan

def working_weight_bytes(cfg: ModelConfig, dtype='bfloat16', fsdp=False, activation_checkpointing=False):
    """Weights in the matmul dtype beside the fp32 ones -> (bytes in the forward, bytes in the backward).
    FSDP: the gathered root and two blocks (current, prefetched), the root's unsharded gradients and one block's
    reduce-scatter buffers. Otherwise, under autocast: the bf16 copies of the Linear weights, all cached in the
    forward and saved for the backward; checkpointed, the blocks' copies go with the autocast cache at the end of
    the forward (the backward's recompute makes one block's again). fp32: none."""
    a = dtype_bytes(dtype)
    if fsdp:
        root, block = param_numel(cfg, 'root'), param_numel(cfg, 'block')
        both = 2 * a * root + 2 * a * block + (a + 4) * block
        return both, both
    if a == 4:
        return 0, 0
    copies = a * param_numel(cfg, 'linear_weight')
    block_copies = a * cfg.n_layer * sum(math.prod(shape) for name, shape, lin in param_table(cfg)
                                         if lin and name.startswith('blocks.0.'))
    return copies, copies - (block_copies if activation_checkpointing else 0)


def plan(cfg: ModelConfig, family='ar', micro_batch_size=1, seq_len=None, options=None, nproc=1, fsdp=False,
         activation_checkpointing=False, dtype='bfloat16', grad_accum=1, mask_fraction=1.0, curriculum=False):
    """Bytes per GPU at the peak of one training step (see the module docstring) -> dict with parameters,
    gradients, optimizer, working_weights, activations, logits, total (their sum), and phase: where the peak is,
    'forward' (the loss), 'backward' (its start: the loss's gradients), 'block backward' (a block's backward,
    after the loss's tensors are freed; checkpointed, with the block recomputed) or 'optimizer step' (all
    gradients, no activations; fused AdamW, as train.py on GPU, makes no temporaries).
    nproc=1 without FSDP is one plain process (`python train.py`): its gradients are freed every step and
    allocated during the backward, so only those of the root and one block count at a block's backward; DDP's
    buckets, FSDP's shards and accumulated gradients are there all the time."""
    held = shard_numel(cfg, nproc, fsdp)
    act = activation_bytes(cfg, family, micro_batch_size, seq_len, options, dtype, activation_checkpointing,
                           mask_fraction, curriculum)
    copies_forward, copies_backward = working_weight_bytes(cfg, dtype, fsdp, activation_checkpointing)
    grads = 4 * held + (4 * param_numel(cfg) if fsdp and grad_accum > 1 else 0)  # FSDP no-sync: unsharded too
    if not (fsdp or nproc > 1 or grad_accum > 1):  # one process: no gradient yet, then the head's and one block's
        grads = (0, 0, 4 * (param_numel(cfg, 'final') + param_numel(cfg, 'block')))
    else:
        grads = (grads, grads, grads)
    not_logits = act['saved'] - act['logits']
    phases = {  # (gradients, working weights, activations, logits) at each candidate peak
        'forward': (grads[0], copies_forward, not_logits, act['logits'] + act['forward_extra']),
        'backward': (grads[1], copies_backward, not_logits, act['logits'] + act['backward_extra']),
        'block backward': (grads[2],  # the loss's tensors are gone; checkpointed, one block's copies are back
                           copies_backward + (copies_forward - copies_backward) // cfg.n_layer,
                           not_logits + act['recompute'], 0),
        'optimizer step': (4 * held, 0, 0, 0),
    }
    phase = max(phases, key=lambda k: sum(phases[k]))
    out = dict(parameters=4 * held, optimizer=2 * 4 * held + 4 * len(param_table(cfg)),  # + AdamW's step scalars
               **dict(zip(('gradients', 'working_weights', 'activations', 'logits'), phases[phase])))
    out['total'] = sum(out.values())
    out['phase'] = phase
    return out


def fits(total, gpu_memory):
    """Whether a planned total fits a GPU of gpu_memory bytes, after the CUDA context and fragmentation."""
    return total * (1 + FRAGMENTATION) + CUDA_RESERVED <= gpu_memory


def max_micro_batch(cfg: ModelConfig, gpu_memory, limit=4096, **kwargs):
    """The largest micro-batch whose plan fits gpu_memory bytes (0: not even one sequence). kwargs: plan's."""
    best, b = 0, 1
    while b <= limit:
        try:
            total = plan(cfg, micro_batch_size=b, **kwargs)['total']
        except ValueError:  # an Eso-LM split that needs a larger micro-batch
            b += 1
            continue
        if not fits(total, gpu_memory):
            break
        best, b = b, b + 1
    return best


def fit_warning(cfg: ModelConfig, gpu_memory, micro_batch_size, **kwargs):
    """None if the plan fits gpu_memory bytes, else a one-line warning naming what would fit. kwargs: plan's
    (family, options, nproc, fsdp, activation_checkpointing, dtype, grad_accum, ...)."""
    total = plan(cfg, micro_batch_size=micro_batch_size, **kwargs)['total']
    if fits(total, gpu_memory):
        return None
    best = max_micro_batch(cfg, gpu_memory, **kwargs)
    fixes = [f"--micro-batch-size {best}" if best else None,
             None if kwargs.get('activation_checkpointing') else '--activation-checkpointing',
             None if kwargs.get('fsdp') or kwargs.get('nproc', 1) == 1 else '--fsdp']
    return (f"warning: the memory plan needs {total / GB:.1f} GB per GPU at micro-batch {micro_batch_size}, more "
            f"than this {gpu_memory / GB:.0f} GB GPU holds: try " + ' or '.join(f for f in fixes if f)
            + " (python -m nanodllm.flops shows the plan)")


def parse_bytes(text):
    """'80GB' -> 80e9, '80GiB' -> 80 * 2**30, '8e10' -> 8e10."""
    units = {'gib': 2 ** 30, 'gb': 1e9, 'mib': 2 ** 20, 'mb': 1e6}
    t = str(text).strip().lower()
    for unit, scale in units.items():
        if t.endswith(unit):
            return float(t[:-len(unit)]) * scale
    return float(t)


def format_plan(p, gpu_memory=None):
    """The plan as aligned lines, in GB (1e9 bytes)."""
    notes = dict(parameters='fp32 weights', gradients='fp32', optimizer='AdamW exp_avg, exp_avg_sq',
                 working_weights='bf16 weight copies / gathered FSDP weights and buffers',
                 activations='saved for the backward by the blocks, rotary, head input',
                 logits='the loss: saved log-probs and V-wide temporaries at the peak')
    lines = [f"  {k.replace('_', ' '):16s} {p[k] / GB:8.2f} GB   {v}" for k, v in notes.items()]
    line = f"  {'total':16s} {p['total'] / GB:8.2f} GB   peak in the {p['phase']}"
    if gpu_memory:
        line += (f"; of {gpu_memory / GB:.0f} GB: " + ('fits' if fits(p['total'], gpu_memory) else 'DOES NOT FIT')
                 + f" (after {CUDA_RESERVED / GB:.1f} GB CUDA context and {100 * FRAGMENTATION:.0f}% fragmentation)")
    return '\n'.join(lines + [line])


# -----------------------------------------------------------------------------
# measuring, on any device

def saved_tensor_bytes(fn, exclude=()):
    """Run fn() and count the bytes autograd saves for the backward meanwhile -> (fn's result, bytes).
    Counts unique storages (a view of something saved costs nothing more), except those of `exclude` (e.g. the
    model's parameters, which the Linear layers save by reference). Sees nothing inside checkpointed blocks."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr() or id(s)] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


class LiveTensors(TorchDispatchMode):
    """Live bytes of the tensor storages allocated inside `with LiveTensors() as m:`, and their peak: the CPU
    stand-in for torch.cuda.max_memory_allocated. Each op's outputs that do not share an input's storage are new
    allocations; a storage counts until Python frees it."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._ids = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or id(s := t.untyped_storage()) in inputs or id(s) in self._ids:
                continue
            self._ids.add(id(s))
            self.live += s.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(s, self._free, id(s), s.nbytes())
        return out

    def _free(self, key, nbytes):
        self._ids.discard(key)
        self.live -= nbytes


# -----------------------------------------------------------------------------
# sampling: what sample.py checks before it allocates

def kv_cache_bytes(cfg: ModelConfig, family, n, length, use_cache=True, element_size=4):
    """Bytes of the KV cache a sampler allocates for n samples of `length` tokens: n_layer x 2 (k, v) x n x H x
    capacity x hd x element_size. AR preallocates capacity = length (ar.sample: model.new_cache(length)); Eso-LM
    starts at seq_len and doubles when a call runs past the end (model.KVCache.update), so up to 2 x length, and
    while one layer grows its old buffer is still alive. MDLM and Duo keep no cache."""
    if not use_cache or family not in ('ar', 'eso'):
        return 0
    per_row = cfg.n_layer * 2 * n * cfg.n_embd * element_size                 # H x hd = n_embd
    if family == 'ar':
        return per_row * length
    if length <= cfg.seq_len:
        return per_row * cfg.seq_len
    return per_row * 2 * length + per_row // cfg.n_layer * length            # + one layer's old buffer (<= length)


def sampling_bytes(cfg: ModelConfig, family, n, length, use_cache=True, prompt_len=1, element_size=4):
    """Bytes a sampler call holds at its peak for n samples of `length` tokens (sample.py's pre-check), roughly:
    the tokens (n, length) int64 and the callback's copy, the KV cache at its full length (kv_cache_bytes), and the
    largest network call: T rows through the blocks (~16 d-wide activations each) attending to K keys (scores,
    softmax and mask: 3 x (n, H, T, K) fp32) and R rows through the head (fp32 logits and ~5 float64 V-wide
    probability / Gumbel tensors). AR with its cache: the prompt at the first call, then one row over `length` keys,
    the head on the last row only; AR without it reruns the prefix (T = K = length, R = 1); the diffusion families
    score every position at every call (T = K = R = length)."""
    d, H, V = cfg.n_embd, cfg.n_head, cfg.vocab_size
    if family == 'ar':
        calls = [(prompt_len, prompt_len, 1), (1, length, 1)] if use_cache else [(length, length, 1)]
    else:
        calls = [(length, length, length)]
    call = max(n * (T * d * element_size * 16 + H * T * K * 4 * 3 + R * V * (4 + 8 * 5)) for T, K, R in calls)
    return 2 * n * length * 8 + kv_cache_bytes(cfg, family, n, length, use_cache, element_size) + call
