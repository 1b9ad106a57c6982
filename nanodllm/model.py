"""The one backbone every family shares: the paper's DiT-style transformer (spec §5).

What is in it, top to bottom:
- an untied token embedding (V rows; row V-1 is the diffusion mask token, spec §0.1);
- a sinusoidal embedding of sigma (cond_dim 128) that drives adaLN-zero modulation in every block;
- pre-LN blocks: weight-only LayerNorm in fp32, bias-free qkv and out projections, rotary (GPT-NeoX half rotation,
  base 1e4) on q and k, `F.scaled_dot_product_attention`, a 4x GELU(tanh) MLP with biases;
- a final adaLN-modulated LayerNorm and a linear head; the mask logit is set to -1e6 in every output (spec §0.1).

A family changes the backbone only through two knobs (spec §0.4, §5):
- `attn`: 'causal' (AR), 'full' (MDLM, Duo), or a boolean mask (B, T, T) / (T, T), True = may attend (Eso-LM's
  sequential part). Eso-LM's diffusion part is 'causal' over permuted tokens with permuted rotary `pos`.
- `sigma`: the noise level fed to adaLN. Only Duo feeds it; everyone else passes None, which means sigma = 0. The
  adaLN layers stay in every family, so parameter and FLOP counts are identical across families.

Speed, without changing the maths (benchmarks/step_time.py measures it):
- the rotary tables are built once per forward, in the compute dtype, and q and k are rotated together;
- a boolean mask runs through `flex_attention` with a block mask when the model is compiled on a GPU (blocks that
  the mask empties are skipped: Eso-LM's sequential part), and through SDPA with the dense mask in eager mode and in
  CPU training (the reference; flex_attention has no CPU backward);
- the head runs only on the rows a caller asks for (`rows`), and the mask logit is written in place (no copy of the
  (B, T, V) logits);
- incremental decoding (AR, spec §1; Eso-LM, spec §4.6) uses a `KVCache` preallocated per layer and written in place.
  Keys are rotated once, when they are inserted, each with its own position (the paper re-rotates every cached key at
  every call; the result is the same). The rows of a call attend to every cached row and causally to each other; only
  the first `keep` rows of a call stay in the cache (Eso-LM caches clean rows, never masks).

Training memory: `model.activation_checkpointing = True` keeps only each block's input in the forward and recomputes
the block in the backward (torch.utils.checkpoint, non-reentrant): same values and gradients, ~12x fewer activation
bytes (nanodllm/memory.py). The residual stream is fp32 even when FSDP gathers bf16 weights.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig

NEG_INF = -1e6  # finite "minus infinity" for the mask logit: -inf gives NaNs through 0*inf (spec §9.1)


class LayerNorm(nn.Module):
    """Weight-only LayerNorm computed in fp32 (eps 1e-5), as in the paper's DiT."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return F.layer_norm(x.float(), (x.size(-1),), self.weight.float(), None, 1e-5)


def modulate(x, shift, scale):
    """adaLN: x * (1 + scale) + shift, with (B|1, 1, d) shift and scale, in one pass (addcmul)."""
    return torch.addcmul(shift, x, 1 + scale)


def rotary_cos_sin(pos, head_dim, base=1e4, dtype=torch.float32):
    """Rotary tables for integer positions pos (T,) or (B, T) -> cos = [cos, cos] and sin = [-sin, sin] over the two
    halves of a head, each (1 or B, 1, T, head_dim), in `dtype` (the angles are computed in fp32 and cast once: the
    model builds the tables once per forward, for all layers)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    angles = pos.float()[..., None] * inv_freq       # (T, hd/2) or (B, T, hd/2)
    if angles.dim() == 2:
        angles = angles[None]                          # (1, T, hd/2)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]                         # (B|1, 1, T, hd/2)
    return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)


def apply_rotary(x, cos, sin):
    """GPT-NeoX half rotation of x (..., T, hd): the first half of each head pairs with the second half,
    [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin] = x * [cos, cos] + [x2, x1] * [-sin, sin], where [x2, x1] is x
    rolled by hd/2. Three passes in x's dtype (mul, roll, addcmul), for q and k at once. cos, sin: `rotary_cos_sin`."""
    return torch.addcmul(x * cos, x.roll(x.size(-1) // 2, dims=-1), sin)


def block_mask(mask):
    """A flex_attention BlockMask from a boolean mask (T, S) or (B, T, S), True = may attend. It looks the mask up
    element by element, but only inside blocks the mask does not empty: the others are skipped (Eso-LM's sequential
    mask empties about 2/3 of its (2L, 2L) blocks at L = 1024). Used only under torch.compile, where flex_attention
    is a fused kernel (in eager mode it is a slow reference implementation), and on CPU only without autograd (there
    is no CPU backward): training on CPU keeps the dense mask."""
    from torch.nn.attention.flex_attention import create_block_mask
    if mask.dim() == 2:
        return create_block_mask(lambda b, h, q, k: mask[q, k], None, None, *mask.shape, device=mask.device)
    return create_block_mask(lambda b, h, q, k: mask[b, q, k], mask.size(0), None, *mask.shape[1:],
                             device=mask.device)


def attention(q, k, v, attn):
    """softmax(q k^T / sqrt(hd)) v for q (B, H, T, hd), k, v (B, H, S, hd) under one of the patterns of `Model`:
    'causal', 'full', a boolean (True = may attend) or additive float mask (T, S) / (B, T, S) for SDPA, or a
    flex_attention BlockMask."""
    if isinstance(attn, str):
        return F.scaled_dot_product_attention(q, k, v, is_causal=(attn == 'causal'))
    if isinstance(attn, torch.Tensor):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn if attn.dim() != 3 else attn[:, None])
    from torch.nn.attention.flex_attention import flex_attention
    # contiguous inputs: inductor's CPU flex_attention template reads a strided v (our qkv[2] view) wrongly (torch 2.13)
    return flex_attention(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=attn)


class KVCache:
    """Per-layer keys (already rotated) and values of the cached rows, preallocated and written in place.

    k[l], v[l]: (B, H, capacity, hd); rows [0, len(cache)) are the cached ones. A call writes its T rows after them
    (`update`), attends to all of them, and then keeps the first `keep` (`advance`); the rows past the kept ones are
    overwritten by the next call. The buffers are allocated at the first call with room for `capacity` rows (default:
    the model's seq_len) and doubled if a call would run past the end. With sigma = 0 (AR, Eso-LM) the adaLN
    modulation does not change from call to call either: the first (no-grad) call stores it in `modulation`.
    """

    def __init__(self, n_layer, capacity=0):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.capacity = capacity
        self.n = 0
        self.modulation = None  # {layer or 'final': adaLN output} when sigma = 0 (the same at every call)

    def __len__(self):
        return self.n

    def update(self, layer, k, v):
        """Write the call's rows k, v (B, H, T, hd) after the cached rows -> keys, values (B, H, n + T, hd) (views)."""
        n, T = self.n, k.size(2)
        buf = self.k[layer]
        if buf is not None and buf.size(0) != k.size(0):
            raise ValueError(f"the KV cache holds {buf.size(0)} sequences, the call has {k.size(0)}: use a new cache")
        if buf is None or n + T > buf.size(2):  # allocate, or grow (double) and keep the cached rows
            size = max(n + T, self.capacity, 2 * (0 if buf is None else buf.size(2)))
            new_k, new_v = (k.new_empty(k.size(0), k.size(1), size, k.size(3)) for _ in range(2))
            if n:
                new_k[:, :, :n], new_v[:, :, :n] = self.k[layer][:, :, :n], self.v[layer][:, :, :n]
            self.k[layer], self.v[layer] = new_k, new_v
        self.k[layer][:, :, n:n + T] = k
        self.v[layer][:, :, n:n + T] = v
        return self.k[layer][:, :, :n + T], self.v[layer][:, :, :n + T]

    def advance(self, keep):
        """The first `keep` rows of the last call stay cached."""
        self.n += keep


class Block(nn.Module):
    """One DiT block: pre-LN attention and MLP halves, each modulated and gated by adaLN-zero."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.n_embd
        self.n_head = cfg.n_head
        self.ln1 = LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.ln2 = LayerNorm(d)
        # GELU with the tanh approximation, as the paper's DiT (spec §5). Kept for fidelity although on CPU, in eager
        # mode, it costs ~4% of a micro training step more than the erf form (benchmarks/README.md).
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate='tanh'), nn.Linear(4 * d, d))
        self.adaLN = nn.Linear(cfg.cond_dim, 6 * d)  # -> shift, scale, gate for attention and for the MLP

    def forward(self, x, c, cos, sin, attn, cache=None, layer=0):
        # x (B, T, d) residual stream; c (B or 1, cond_dim) conditioning, or None: reuse the modulation this block
        # stored in the KV cache at its first call (sigma = 0 at every call); cos, sin: rotary tables of the T rows
        B, T, d = x.shape
        H, hd = self.n_head, d // self.n_head
        mod = cache.modulation[layer] if c is None else self.adaLN(c)             # (B|1, 6d)
        if c is not None and cache is not None and cache.modulation is not None:
            cache.modulation[layer] = mod
        shift1, scale1, gate1, shift2, scale2, gate2 = mod[:, None].chunk(6, dim=-1)    # each (B|1, 1, d)

        h = modulate(self.ln1(x), shift1, scale1)                                   # (B, T, d)
        qkv = self.qkv(h).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)               # (3, B, H, T, hd)
        q, k = apply_rotary(qkv[:2], cos, sin)                                      # each (B, H, T, hd), rotated
        v = qkv[2]
        if cache is not None:  # cached rows first (their keys rotated when they were inserted), then these T rows
            k, v = cache.update(layer, k, v)                                        # (B, H, Tc + T, hd)
        y = attention(q, k, v, attn).transpose(1, 2).reshape(B, T, d)              # (B, T, d)
        x = torch.addcmul(x, gate1, self.out(y))                                    # x + gate1 * out(y)

        return torch.addcmul(x, gate2, self.mlp(modulate(self.ln2(x), shift2, scale2)))


class SigmaEmbedder(nn.Module):
    """sigma (B,) -> sinusoid of size 256 -> Linear, SiLU, Linear -> (B, cond_dim) (spec §5, 'TimestepEmbedder')."""

    def __init__(self, cond_dim, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma):
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
        args = sigma.float()[:, None] * freqs[None]                                # (B, 128)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))    # (B, cond_dim)


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head or (cfg.n_embd // cfg.n_head) % 2:
            raise ValueError(f"n_embd {cfg.n_embd} must split into {cfg.n_head} heads of even size")
        self.cfg = cfg
        d = cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size, d)
        self.sigma_map = SigmaEmbedder(cfg.cond_dim)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = LayerNorm(d)
        self.adaLN_f = nn.Linear(cfg.cond_dim, 2 * d)   # -> shift, scale of the final LayerNorm
        self.head = nn.Linear(d, cfg.vocab_size)
        # activation checkpointing: keep only each block's input during the forward and recompute the block in the
        # backward (torch.utils.checkpoint, non-reentrant); set by train.py --activation-checkpointing
        self.activation_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """All initialisation in one place (spec §5, §9.17).

        | tensor                              | init                                      |
        |-------------------------------------|-------------------------------------------|
        | wte (V, d)                          | U(-1/sqrt(d), 1/sqrt(d)) (kaiming a=sqrt5)|
        | qkv, out, mlp, sigma_map Linears    | PyTorch default (kaiming_uniform a=sqrt5) |
        | LayerNorm weights                   | 1                                         |
        | every adaLN Linear (blocks, final)  | 0 (weight and bias): blocks start as identity |
        | head (weight and bias)              | 0: logits start exactly 0                 |
        """
        nn.init.uniform_(self.wte.weight, -1 / math.sqrt(self.cfg.n_embd), 1 / math.sqrt(self.cfg.n_embd))
        for lin in [b.adaLN for b in self.blocks] + [self.adaLN_f, self.head]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, idx, sigma=None, attn='full', pos=None, cache=None, keep=None, rows=None):
        """idx (B, T) token ids -> logits (B, T, V) in fp32, mask logit = -1e6.

        idx may also be (B, T, V) float probabilities (Duo's curriculum, spec §3.5): embedded as idx @ wte.weight, the
        probability-weighted average of the rows (a one-hot row gives exactly the token's embedding).

        sigma: (B,) noise level for adaLN, or None for sigma = 0 (every family but Duo).
        attn:  'causal' | 'full' | bool tensor (T, T) or (B, T, T), True = may attend. Ignored with a cache.
        pos:   (T,) or (B, T) rotary positions; default: arange(T), after the cached rows when a cache is given.
        cache: a KVCache; the T rows attend to all cached rows and causally among themselves, then the first
               `keep` rows (default all) stay in the cache.
        rows:  a slice of the T rows: only their logits are computed and returned (B, len(rows), V); the blocks still
               run on every row (Eso-LM's sequential part scores only its first half; AR sampling its last row).
        """
        B, T = idx.shape[:2]
        Tc = 0 if cache is None else len(cache)
        if keep is not None and not 0 <= keep <= T:
            raise ValueError(f"keep must lie in [0, {T}] (the rows of this call), got {keep}")
        if pos is None:
            pos = torch.arange(Tc, Tc + T, device=idx.device)
        if cache is not None:  # all cached rows, then these T rows causally: -inf above the diagonal Tc of (T, Tc + T)
            attn = ('causal' if Tc == 0 else 'full' if T == 1
                    else torch.full((T, Tc + T), -math.inf, device=idx.device).triu(Tc + 1))
        elif isinstance(attn, str) and attn not in ('causal', 'full'):
            raise ValueError(f"attn must be 'causal', 'full' or a boolean mask, got {attn!r}")
        elif isinstance(attn, torch.Tensor) and attn.dtype == torch.bool and torch.compiler.is_compiling() and (
                attn.is_cuda or not torch.is_grad_enabled()):  # flex_attention has no backward on CPU (torch 2.13)
            attn = block_mask(attn)  # compiled: flex_attention skips the blocks the mask empties
        dev = idx.device.type  # (the meta device, used to count FLOPs and bytes, has no autocast)
        autocast = torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)
        dtype = torch.get_autocast_dtype(dev) if autocast else self.head.weight.dtype  # the dtype q and k come in
        cos, sin = rotary_cos_sin(pos, self.cfg.n_embd // self.cfg.n_head, dtype=dtype)  # for all layers

        # sigma = 0 at every call of a KV cache (AR, Eso-LM sampling): the adaLN modulation of every block and of the
        # final layer is stored in the cache at the first call and reused after it (c = None)
        reuse = cache is not None and sigma is None and not torch.is_grad_enabled()
        if reuse and cache.modulation:
            c = None
        else:
            c = F.silu(self.sigma_map(torch.zeros(1, device=idx.device) if sigma is None else sigma))  # (B|1, cond)
            if cache is not None:
                cache.modulation = {} if reuse else None                             # filled by the blocks

        soft = idx.is_floating_point()  # (B, T, V) probabilities: their average embedding (spec §3.5)
        # (B, T, d) the residual stream is fp32 (a no-op unless FSDP gathers bf16 weights)
        x = (idx.to(self.wte.weight.dtype) @ self.wte.weight if soft else self.wte(idx)).float()
        recompute = self.activation_checkpointing and torch.is_grad_enabled() and cache is None
        for i, block in enumerate(self.blocks):
            if recompute:  # same values and gradients, a block's activations held only while it is recomputed
                x = checkpoint(block, x, c, cos, sin, attn, use_reentrant=False)
            else:
                x = block(x, c, cos, sin, attn, cache=cache, layer=i)
        if cache is not None:
            cache.advance(T if keep is None else keep)
        if rows is not None:
            x = x[:, rows]                                                           # (B, T', d)
        mod = cache.modulation['final'] if c is None else self.adaLN_f(c)           # (B|1, 2d)
        if c is not None and cache is not None and cache.modulation is not None:
            cache.modulation['final'] = mod
        shift, scale = mod[:, None].chunk(2, dim=-1)                                 # (B|1, 1, d) each
        h = modulate(self.ln_f(x), shift, scale)                                     # (B, T', d)
        logits = self.head(h.flatten(0, 1)).float()                                  # (B T', V) fp32
        # the mask logit, in place (no copy of the logits; the head's backward does not need its output), written
        # on the 2-D head output: an in-place write into a view of it breaks FSDP2's backward hooks (torch 2.13)
        logits[:, self.cfg.mask_id] = NEG_INF
        return logits.view(*h.shape[:-1], -1)                                       # (B, T', V)

    def new_cache(self, capacity=None):
        """An empty KVCache with room for `capacity` rows (default: seq_len); it grows if a sample is longer."""
        return KVCache(self.cfg.n_layer, capacity or self.cfg.seq_len)

    def num_params(self, non_embedding=True):
        """Parameter count; non-embedding = all but the input embedding (the head counts), as in the paper."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n
