"""FLOP accounting shared by every family (spec §6.2, §9.18): parameter counts, forward FLOPs per token,
FLOP budget -> number of steps, and MFU.

Conventions, as in the paper:
- forward FLOPs count matmuls only (2 x multiply-adds), the output head included, the input embedding (a lookup)
  and the attention scores (QK^T, AV) excluded; training FLOPs = 3 x forward (backward ~ 2 x forward);
- every family pays the same F per token (AR too, although it scores L-1 of L positions), so one budget gives the
  same number of steps to all families: steps = budget / (3 F B L);
- non-embedding parameters = all parameters but the input embedding (the untied head counts).
"""
import time

import torch

from .config import ModelConfig


def non_embedding_params(cfg: ModelConfig):
    """Analytic parameter count of model.Model without the input embedding (V x d)."""
    d, V, c, L = cfg.n_embd, cfg.vocab_size, cfg.cond_dim, cfg.n_layer
    block = (3 * d * d + d * d            # qkv, out (bias-free)
             + 4 * d * d + 4 * d + 4 * d * d + d  # MLP with biases
             + c * 6 * d + 6 * d          # adaLN modulation
             + 2 * d)                     # two weight-only LayerNorms
    final = d + c * 2 * d + 2 * d + d * V + V   # LayerNorm, adaLN, head
    sigma_map = 256 * c + c + c * c + c
    return L * block + final + sigma_map


def forward_flops_per_token(cfg: ModelConfig, seq_len=None):
    """Forward FLOPs per token, by structure: 2 x (multiply-adds of every matmul).

    Per token: 12 d^2 per block (qkv 3d^2, out d^2, MLP 8d^2) and V d for the head. Per sequence (spread over its
    seq_len tokens): the sigma embedder and the adaLN projections, which act once per row of c, not per token.
    """
    d, V, c, L = cfg.n_embd, cfg.vocab_size, cfg.cond_dim, cfg.n_layer
    seq_len = seq_len or cfg.seq_len
    per_token = 2 * (L * 12 * d * d + V * d)
    per_sequence = 2 * (256 * c + c * c + L * c * 6 * d + c * 2 * d)
    return per_token + per_sequence / seq_len


def steps_for_budget(budget, cfg: ModelConfig, tokens_per_step):
    """Number of optimizer steps that spend `budget` training FLOPs: budget / (3 F tokens_per_step) (spec §6.2)."""
    return int(budget / (3 * forward_flops_per_token(cfg) * tokens_per_step))


# dense bf16 tensor-core peaks (FLOP/s) of common GPUs, from the vendors' data sheets
GPU_PEAK_FLOPS = {'H100': 989e12, 'H200': 989e12, 'H800': 989e12, 'A100': 312e12, 'A800': 312e12,
                  'L40S': 362e12, 'A10G': 125e12, 'RTX 4090': 165e12, 'RTX 3090': 71e12}


def peak_flops(device):
    """Peak FLOP/s for MFU. GPUs: the data-sheet bf16 peak looked up by name (None if unknown).
    CPU: there is no data sheet to trust, so measure the fp32 matmul rate of this machine once (~0.5 s);
    CPU MFU is therefore 'fraction of what a large matmul reaches here'."""
    device = torch.device(device)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), None)
    a = torch.randn(1024, 1024)
    a @ a  # warm-up
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.3:
        a @ a
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0)
