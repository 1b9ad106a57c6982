"""FLOP accounting shared by every family (spec §6.2, §9.18): parameter counts, forward FLOPs per token,
FLOP budget -> number of steps, and MFU. `python -m nanodllm.flops` prints a size's FLOPs and its memory plan
(nanodllm/memory.py):

    python -m nanodllm.flops --size 1.7b --seq-len 2048 --micro-batch-size 4 --nproc 8 --fsdp --family eso

Conventions, as in the paper:
- forward FLOPs count matmuls only (2 x multiply-adds), the output head included, the input embedding (a lookup)
  and the attention scores (QK^T, AV) excluded; training FLOPs = 3 x forward (backward ~ 2 x forward);
- every family pays the same F per token (AR too, although it scores L-1 of L positions), so one budget gives the
  same number of steps to all families: steps = budget / (3 F B L);
- non-embedding parameters = all parameters but the input embedding (the untied head counts).
"""
import time

import torch

from .config import ModelConfig, SIZES, get_config


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


def main(argv=None):
    """Print the FLOPs and the per-GPU memory plan of one configuration, and the largest micro-batch that fits."""
    import argparse
    from . import cli, memory

    def gpu_bytes(text):  # type= for --gpu-memory: a positive size ('80GB', '141GB', '24GiB', '8e10')
        try:
            value = memory.parse_bytes(text)
        except ValueError:
            value = float('nan')
        if not value > 0 or value == float('inf'):
            raise argparse.ArgumentTypeError(f"must be a size such as 80GB, 141GB or 24GiB, got {text!r}")
        return value

    # every flag is range-checked where it is parsed (nanodllm/cli.py): one line `error: ...`, exit code 2
    p = cli.ArgumentParser(prog='python -m nanodllm.flops', description=main.__doc__)
    p.add_argument('--size', type=cli.one_of(tuple(SIZES), 'size'), default='1.7b', help=' | '.join(SIZES))
    p.add_argument('--seq-len', type=cli.integer(min=2), default=2048)
    p.add_argument('--vocab', type=cli.integer(min=2), default=50258,
                   help='vocabulary with the mask token (GPT-2: 50257 + 1)')
    p.add_argument('--family', type=cli.one_of(('ar', 'mdlm', 'duo', 'eso'), 'family'), default='ar',
                   help='ar | mdlm | duo | eso')
    p.add_argument('--alpha0', type=cli.number(ge=0, le=1), default=None,
                   help='eso: alpha_0 (< 1 adds the sequential part; default 1)')
    p.add_argument('--batch-split', type=cli.number(ge=0, le=1), default=None,
                   help='eso with 0 < alpha0 < 1: fraction of rows on the diffusion part (default 1)')
    p.add_argument('--micro-batch-size', type=cli.integer(min=1), default=1, help='sequences per GPU per forward')
    p.add_argument('--batch-size', type=cli.integer(min=0), default=0, help='global sequences per step (0: micro x '
                   'nproc, no accumulation); with --fsdp, accumulation keeps unsharded gradients')
    p.add_argument('--nproc', type=cli.integer(min=1), default=1, help='GPUs')
    p.add_argument('--fsdp', action='store_true', help='FSDP2: shard weights, gradients, optimizer states')
    p.add_argument('--activation-checkpointing', action='store_true')
    p.add_argument('--dtype', choices=('bfloat16', 'float16', 'float32'), default='bfloat16', help='autocast dtype')
    p.add_argument('--gpu-memory', type=gpu_bytes, default='80GB', help='memory of one GPU, e.g. 80GB, 141GB, 24GiB')
    args = p.parse_args(argv)
    for flag, value in (('--alpha0', args.alpha0), ('--batch-split', args.batch_split)):
        if value is not None and args.family != 'eso':
            p.fail(f"{flag} does not apply to --family {args.family}")
    alpha0 = 1.0 if args.alpha0 is None else args.alpha0
    if args.batch_split is not None and alpha0 in (0.0, 1.0):
        p.fail(f"--batch-split splits a batch between Eso-LM's two parts, but --alpha0 {alpha0:g} trains only one: "
               f"drop --batch-split, or pick --alpha0 in (0, 1)")
    batch = args.batch_size or args.micro_batch_size * args.nproc
    if batch % (args.micro_batch_size * args.nproc):
        p.fail(f"--batch-size {batch} is not a multiple of --micro-batch-size {args.micro_batch_size} x --nproc "
               f"{args.nproc}")
    try:
        cfg = get_config(args.size, args.vocab, args.seq_len)
        gpu_memory = args.gpu_memory
        options = dict(alpha0=alpha0, batch_split=1.0 if args.batch_split is None else args.batch_split) \
            if args.family == 'eso' else {}
        kwargs = dict(family=args.family, options=options, nproc=args.nproc, fsdp=args.fsdp, dtype=args.dtype,
                      activation_checkpointing=args.activation_checkpointing,
                      grad_accum=batch // (args.micro_batch_size * args.nproc))
        plan = memory.plan(cfg, micro_batch_size=args.micro_batch_size, **kwargs)
    except ValueError as e:
        p.fail(e)
    n_params = memory.param_numel(cfg)
    print(f"{args.size}: d {cfg.n_embd}, {cfg.n_layer} layers, {cfg.n_head} heads, V {cfg.vocab_size}: "
          f"{n_params / 1e9:.3f}B parameters ({non_embedding_params(cfg) / 1e9:.3f}B non-embedding), "
          f"F = {forward_flops_per_token(cfg) / 1e9:.2f} GFLOP/token forward")
    mode = f"FSDP over {args.nproc}" if args.fsdp else f"DDP over {args.nproc}" if args.nproc > 1 else "1 GPU"
    print(f"{args.family} {options or ''} | L {args.seq_len} | micro-batch {args.micro_batch_size} | {mode} | "
          f"{args.dtype}{' | activation checkpointing' if args.activation_checkpointing else ''} | "
          f"accumulation {kwargs['grad_accum']}; bytes per GPU at the step's peak:")
    print(memory.format_plan(plan, gpu_memory))
    best = memory.max_micro_batch(cfg, gpu_memory, **kwargs)
    print(f"largest micro-batch that fits {gpu_memory / 1e9:.0f} GB: {best}")


if __name__ == '__main__':
    main()
