"""Validation loss on a fixed set of sequences (spec §7.1), the same whatever the micro-batch size and process count.

The set is the first `n_sequences` blocks of seq_len tokens of val.bin. Rank r of W takes, in evaluation batch k,
the sequences [(k W + r) B, (k W + r + 1) B) that are < n_sequences. Sequence j draws its noise (t, masks, noise
tokens, orders) from its own generator (noise.RowNoise, seeded by j), and its t is stratified over the whole set,
so the loss of each sequence does not depend on which batch or process it lands in; the sums are all-reduced and
divided once. Repeated evaluations see the same noise, so a curve moves only because the model does.
For prompt/response records (nanodllm/records.py) a sequence is one held-out record's row, and the loss is per
response + pad token: `prompt_path` gives each row's given (prompt) mask to the family's loss.
"""
from contextlib import nullcontext

import torch
import torch.distributed as dist

from . import data, eso, noise

SEED = 1234  # the evaluation noise; not --seed, so that runs with different seeds are compared on the same noise


def eval_set_size(asked, val_tokens, seq_len, default=320):
    """--eval-sequences -> the number of validation sequences: `asked`, or min(default, all) when not given. A set
    larger than the validation split is a ValueError naming the fix."""
    available = val_tokens // seq_len
    n = asked or max(1, min(default, available))
    if n > available:
        raise ValueError(f"the validation split holds {available} sequences of --seq-len {seq_len} ({val_tokens} "
                         f"tokens) but --eval-sequences asks for {n}: lower --eval-sequences or --seq-len, or use more "
                         f"data")
    return n


def batch_rows(n_sequences, micro, world):
    """Rows per process per evaluation forward: at most `micro`, fewer when the set is small."""
    return min(micro, -(-n_sequences // world))


@torch.no_grad()
def validation_sums(model, family, options, val_path, n_sequences, micro, seq_len, rank=0, world=1, device='cpu',
                    autocast=None, prompt_path=None):
    """This rank's share of the set -> float64 tensor [sum of the per-token loss, number of tokens].

    Eso-LM with 0 < alpha0 < 1 runs every sequence through BOTH its parts (the per-token NELBO = sequential part +
    diffusion part on the same sequence, spec §4.4.6) instead of splitting the batch by --batch-split, so that the
    value does not depend on how sequences fall into batches (a deviation: the paper's validation splits the batch).
    """
    was_training = model.training
    model.eval()
    rows_per_batch = batch_rows(n_sequences, micro, world)
    eso_both = family is eso and 0 < options['alpha0'] < 1
    total = torch.zeros(2, dtype=torch.float64, device=device)
    batches = data.eval_batches(val_path, rows_per_batch, seq_len, rank, world, device=device,
                                max_batches=-(-n_sequences // (rows_per_batch * world)), prompt_path=prompt_path)
    for k, batch in enumerate(batches):
        x, given = data.split_batch(batch)                       # given: None for text, (B, L) bool for records
        first = (k * world + rank) * rows_per_batch              # index of this rank's first sequence in batch k
        index = range(first, min(first + rows_per_batch, n_sequences))
        if len(index) == 0:
            continue
        x, rows, opts = x[:len(index)], noise.RowNoise(index, n_sequences, SEED, device), options
        given = None if given is None else given[:len(index)]
        if eso_both:  # rows [0, n) -> diffusion part, [n, 2n) -> sequential part, each with its own streams
            x, rows = torch.cat([x, x]), rows + noise.RowNoise(index, n_sequences, SEED + 1, device)
            given = None if given is None else torch.cat([given, given])
            opts = dict(options, batch_split=0.5)
        with autocast or nullcontext():
            nll, n = family.loss(model, x, train=False, generator=rows, given=given, **opts)
        total += torch.stack([nll.double(), torch.as_tensor(n, dtype=torch.float64, device=device)])
    model.train(was_training)
    return total


def validation_loss(model, family, options, val_path, n_sequences, micro, seq_len, rank=0, world=1, ddp=False,
                    device='cpu', autocast=None, prompt_path=None):
    """Loss per token over the set: the exact NLL for AR, the NELBO for diffusion families (never low-var).
    Under DDP the sums of all ranks are all-reduced before dividing (spec §7.1)."""
    total = validation_sums(model, family, options, val_path, n_sequences, micro, seq_len, rank, world, device,
                            autocast, prompt_path)
    if ddp:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()
