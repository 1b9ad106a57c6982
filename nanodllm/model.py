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

Training memory: `model.activation_checkpointing = True` keeps only each block's input in the forward and recomputes
the block in the backward (torch.utils.checkpoint, non-reentrant): same values and gradients, ~12x fewer activation
bytes (nanodllm/memory.py). The residual stream is fp32 even when FSDP gathers bf16 weights.

Incremental decoding uses a `KVCache` (AR, spec §1; Eso-LM, spec §4.6): keys are cached *before* rotary together
with their positions, and re-rotated every call; the rows of a call attend to every cached row and causally to each
other; only the first `keep` rows of a call are appended to the cache (Eso-LM caches clean rows, never masks).
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
    """adaLN: x * (1 + scale) + shift, with (B, 1, d) shift and scale."""
    return x * (1 + scale) + shift


def rotary_cos_sin(pos, head_dim, base=1e4):
    """Rotary angles for integer positions pos (T,) or (B, T) -> cos, sin of shape (1 or B, 1, T, head_dim/2), fp32."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    angles = pos.float()[..., None] * inv_freq       # (T, hd/2) or (B, T, hd/2)
    if angles.dim() == 2:
        angles = angles[None]                          # (1, T, hd/2)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x, cos, sin):
    """GPT-NeoX half rotation: the first half of each head pairs with the second half. x (B, H, T, hd)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)


class KVCache:
    """Per-layer keys (pre-rotary) and values of the cached rows, plus their positions.

    k[l], v[l]: (B, H, Tc, hd); pos: (B, Tc) long. Starts empty; `Model.forward(..., cache=...)` fills it.
    """

    def __init__(self, n_layer):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.pos = None

    def __len__(self):
        return 0 if self.pos is None else self.pos.size(1)


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
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate='tanh'), nn.Linear(4 * d, d))
        self.adaLN = nn.Linear(cfg.cond_dim, 6 * d)  # -> shift, scale, gate for attention and for the MLP

    def forward(self, x, c, cos, sin, attn, cache=None, layer=0, keep=None):
        # x (B, T, d) residual stream; c (B or 1, cond_dim) conditioning
        B, T, d = x.shape
        H, hd = self.n_head, d // self.n_head
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c)[:, None].chunk(6, dim=-1)  # each (B|1, 1, d)

        h = modulate(self.ln1(x), shift1, scale1)                                   # (B, T, d)
        q, k, v = self.qkv(h).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)           # each (B, H, T, hd)
        if cache is not None:
            # cached rows come first; keys are stored pre-rotary and rotated here with their own positions
            if cache.k[layer] is not None:
                k = torch.cat([cache.k[layer], k], dim=2)                           # (B, H, Tc + T, hd)
                v = torch.cat([cache.v[layer], v], dim=2)
            n_cached = k.size(2) - T + (T if keep is None else keep)                 # old rows + the first `keep`
            cache.k[layer], cache.v[layer] = k[:, :, :n_cached], v[:, :, :n_cached]
        # cos/sin cover all key positions; queries are the last T of them
        q = apply_rotary(q, cos[:, :, -T:], sin[:, :, -T:])
        k = apply_rotary(k, cos, sin)
        if isinstance(attn, str):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=(attn == 'causal'))
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn if attn.dim() != 3 else attn[:, None])
        y = y.transpose(1, 2).reshape(B, T, d)                                      # (B, T, d)
        x = x + gate1 * self.out(y)

        x = x + gate2 * self.mlp(modulate(self.ln2(x), shift2, scale2))
        return x


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
        is_mask = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        is_mask[cfg.mask_id] = True
        self.register_buffer('is_mask', is_mask, persistent=False)
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

    def forward(self, idx, sigma=None, attn='full', pos=None, cache=None, keep=None):
        """idx (B, T) token ids -> logits (B, T, V) in fp32, mask logit = -1e6.

        sigma: (B,) noise level for adaLN, or None for sigma = 0 (every family but Duo).
        attn:  'causal' | 'full' | bool tensor (T, T) or (B, T, T), True = may attend. Ignored with a cache.
        pos:   (T,) or (B, T) rotary positions; default: arange(T), after the cached rows when a cache is given.
        cache: a KVCache; the T rows attend to all cached rows and causally among themselves, then the first
               `keep` rows (default all) are appended to the cache.
        """
        B, T = idx.shape
        Tc = 0 if cache is None else len(cache)
        if pos is None:
            pos = torch.arange(Tc, Tc + T, device=idx.device)
        if pos.dim() == 1:
            pos = pos[None].expand(B, T)                                             # (B, T)
        if cache is not None:
            pos_all = pos if cache.pos is None else torch.cat([cache.pos, pos], dim=1)  # (B, Tc + T)
            attn = torch.ones(T, Tc + T, dtype=torch.bool, device=idx.device).tril(diagonal=Tc)
            n_keep = T if keep is None else keep
            cache.pos = pos_all[:, :Tc + n_keep]
            pos = pos_all
        elif isinstance(attn, str) and attn not in ('causal', 'full'):
            raise ValueError(f"attn must be 'causal', 'full' or a boolean mask, got {attn!r}")
        cos, sin = rotary_cos_sin(pos, self.cfg.n_embd // self.cfg.n_head)          # (B, 1, Tc + T, hd/2)

        if sigma is None:  # sigma = 0 for every row: one conditioning vector, broadcast over the batch
            sigma = torch.zeros(1, device=idx.device)
        c = F.silu(self.sigma_map(sigma))                                            # (B or 1, cond_dim)

        x = self.wte(idx).float()  # (B, T, d) the residual stream is fp32 (a no-op unless FSDP gathers bf16 weights)
        recompute = self.activation_checkpointing and torch.is_grad_enabled() and cache is None
        for i, block in enumerate(self.blocks):
            if recompute:  # same values and gradients, a block's activations held only while it is recomputed
                x = checkpoint(block, x, c, cos, sin, attn, use_reentrant=False)
            else:
                x = block(x, c, cos, sin, attn, cache=cache, layer=i, keep=keep)
        shift, scale = self.adaLN_f(c)[:, None].chunk(2, dim=-1)                     # (B|1, 1, d) each
        logits = self.head(modulate(self.ln_f(x), shift, scale)).float()             # (B, T, V)
        return logits.masked_fill(self.is_mask, NEG_INF)

    def new_cache(self):
        return KVCache(self.cfg.n_layer)

    def num_params(self, non_embedding=True):
        """Parameter count; non-embedding = all but the input embedding (the head counts), as in the paper."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n
