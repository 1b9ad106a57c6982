"""A few AdamW steps of a tiny model through nanodllm.parallel, launched by tests/test_parallel.py: alone (one
process) or under `torchrun --nproc_per_node=2` (DDP or FSDP2 over gloo). Not collected by pytest.

    torchrun --standalone --nproc_per_node=2 tests/parallel_worker.py --fsdp --out fsdp.pt

Every run sees the same global batch per step, split over ranks and micro-steps, so every mode must give the same
losses, gradient norms and weights. Rank 0 writes the gathered full state, the per-step losses and gradient norms,
and the bytes its own shard of the parameters, gradients and AdamW states holds, to --out.
"""
import argparse
import contextlib

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from nanodllm import parallel
from nanodllm.common import exit_process, init_distributed
from nanodllm.families import get_family
from nanodllm.config import ModelConfig
from nanodllm.model import Model

p = argparse.ArgumentParser()
p.add_argument('--fsdp', action='store_true')
p.add_argument('--activation-checkpointing', action='store_true')
p.add_argument('--bf16', action='store_true', help='bf16 CPU autocast; with --fsdp, bf16 gathered weights')
p.add_argument('--family', default='ar')
p.add_argument('--steps', type=int, default=3)
p.add_argument('--batch-size', type=int, default=8, help='global sequences per step')
p.add_argument('--micro-batch-size', type=int, default=2)
p.add_argument('--load', default='', help='a checkpoint written by this script: continue from it')
p.add_argument('--out', required=True)
args = p.parse_args()

ddp, rank, _, world, device = init_distributed('cpu')
cfg = ModelConfig(vocab_size=37, n_layer=2, n_head=2, n_embd=32, seq_len=16)
torch.manual_seed(0)
raw_model = Model(cfg)
with torch.no_grad():  # non-zero adaLN and head, so that every parameter gets a gradient from the first step
    for lin in [b.adaLN for b in raw_model.blocks] + [raw_model.adaLN_f, raw_model.head]:
        lin.weight.normal_(0, 0.1)
raw_model.activation_checkpointing = args.activation_checkpointing
if args.bf16 and args.fsdp:  # wrap_model gathers bf16 only on GPU (no autocast on CPU in train.py): shard directly
    model = parallel.shard(raw_model, param_dtype=torch.bfloat16)
else:
    model = parallel.wrap_model(raw_model, device, fsdp=args.fsdp)
autocast = torch.autocast('cpu', dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
model.cfg = cfg
optimizer = torch.optim.AdamW(raw_model.parameters(), lr=1e-2, weight_decay=0.1)
start = 0
if args.load:
    ckpt = torch.load(args.load, mmap=True, weights_only=True)
    parallel.load_full_state_dict(raw_model, optimizer, ckpt['model'], ckpt['optimizer'])
    start = ckpt['step']
    loaded, loaded_optim = parallel.full_state_dict(raw_model, optimizer)  # a round trip must give back the same
    if rank == 0:
        assert all(torch.equal(loaded[k], ckpt['model'][k]) for k in ckpt['model']), 'model state changed on load'
        for i, s in ckpt['optimizer']['state'].items():
            assert all(torch.equal(loaded_optim['state'][i][k], v) for k, v in s.items()), f'parameter {i} changed'


def local_bytes(tensors):
    return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in tensors)


family = get_family(args.family)
accum = args.batch_size // (args.micro_batch_size * world)
losses, norms = [], []
for step in range(start, start + args.steps):
    g = torch.Generator().manual_seed(step)
    x = torch.randint(0, cfg.vocab_size - 1, (args.batch_size, cfg.seq_len), generator=g)  # the global batch
    total = torch.zeros(())
    for micro_step in range(accum):
        k = rank * accum + micro_step
        x0 = x[k * args.micro_batch_size:(k + 1) * args.micro_batch_size]
        parallel.set_grad_sync(model, micro_step == accum - 1)
        torch.manual_seed(1000 * step + k)  # the masks of the diffusion families depend on the slice, not the rank
        with autocast:
            nll, n = family.loss(model, x0, strata=(k, world * accum), generator=torch.Generator().manual_seed(step))
        loss = nll / n / accum
        loss.backward()
        total += loss.detach()
    if ddp:
        dist.all_reduce(total, op=dist.ReduceOp.AVG)
    norms.append(parallel.clip_grad_norm_(model, 0.5).item())
    losses.append(total.item())
    optimizer.step()
    # what this rank holds after a step: its shards (FSDP) or full copies, for the memory planner's test
    held = dict(parameters=local_bytes(raw_model.parameters()),
                gradients=local_bytes(q.grad for q in raw_model.parameters()),
                optimizer=local_bytes(t for s in optimizer.state.values() for t in s.values()))
    optimizer.zero_grad(set_to_none=True)

# evaluation as train.py does it: no gradients, every rank its share of a batch, sums all-reduced
with torch.no_grad(), autocast:  # (bf16 gathered weights need autocast, as in training)
    x = torch.randint(0, cfg.vocab_size - 1, (4, cfg.seq_len), generator=torch.Generator().manual_seed(99))
    nll, n = family.loss(raw_model, x[rank * 4 // world:(rank + 1) * 4 // world], train=False,
                         generator=torch.Generator().manual_seed(0))
    sums = torch.stack([nll, torch.tensor(float(n))])
    if ddp:
        dist.all_reduce(sums)
    eval_loss = (sums[0] / sums[1]).item()
model_state, optim_state = parallel.full_state_dict(raw_model, optimizer)
plain = parallel.full_model(raw_model, device)  # rank 0: an unsharded copy, e.g. to sample from alone
if rank == 0:
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in model_state.items()), 'full_model differs'
    assert plain is raw_model or not parallel.is_fsdp(plain)
    torch.save(dict(model=model_state, optimizer=optim_state, step=start + args.steps, losses=losses, norms=norms,
                    held=held, world=world, eval_loss=eval_loss), args.out)
assert parallel.all_finite(raw_model)
with torch.no_grad():  # the last rank's shard turns NaN: every rank must see it
    q = next(raw_model.parameters())
    (q.to_local() if isinstance(q, DTensor) else q)[0].fill_(float('nan') if rank == world - 1 else 0.0)
assert not parallel.all_finite(raw_model), 'a NaN in one shard went unseen'
exit_process(0)  # (leaves the group together; os._exit: gloo can abort the interpreter's teardown)
