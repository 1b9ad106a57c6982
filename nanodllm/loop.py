"""What train.py's loop needs so that the host never waits for the GPU on a step that does not log: the
next micro-batch loaded while the current one computes, and the loss, gradient norm and first non-finite step
kept on the device.

    batches = loop.Prefetcher(train_loader)
    record = loop.StepRecord(device)
    for step ...:
        for micro_step ...:
            x0 = batches.next_batch()                # on the device already: loaded during the previous forward
            nll, n = family.loss(model, x0, ...)     # (the kernels are queued; the GPU works through them)
            batches.prefetch()                       # ... while the host reads the next batch and queues its copy
            loss.backward()
        grad_norm = parallel.clip_grad_norm_(model, max_norm)
        record.add(step, loss, grad_norm)            # a few element-wise kernels: nothing waits
        optimizer.step()
        if step % log_every == 0:
            loss, grad_norm, bad = record.read()     # one device -> host copy: the only place the host waits

Why: on a GPU the host queues kernels ahead of the device. `.item()`, `print(tensor)` or `torch.cuda.synchronize()`
make it wait until the device has caught up, and the device then idles while the host prepares the next step.
"""
import math

import torch


class Prefetcher:
    """Training batches one ahead of the loop (nanoGPT's get_batch right after the forward): `next_batch()` returns
    the batch that `prefetch()` loaded (or loads one now), `prefetch()` loads the next. On CUDA the loader copies
    from pinned memory with non_blocking=True (data._to_batch), so the copy is queued behind the forward's kernels
    and the host goes on at once.

    `state_dict()` is the loader's position of the batch `next_batch()` returns next, i.e. before the batch in
    flight: a checkpoint taken with a batch prefetched resumes with that batch, and a resumed run reads the same
    batches in the same order as an uninterrupted one."""

    def __init__(self, loader):
        self.loader = loader
        self.ahead, self.state = None, None   # the prefetched batch and the loader's position before it

    def next_batch(self):
        if self.ahead is None:
            return self.loader.next_batch()
        x, self.ahead, self.state = self.ahead, None, None
        return x

    def prefetch(self):
        if self.ahead is None:
            self.state = self.loader.state_dict()
            self.ahead = self.loader.next_batch()

    def state_dict(self):
        return self.state if self.ahead is not None else self.loader.state_dict()


class StepRecord:
    """The last step's loss and gradient norm, and the FIRST step whose loss or gradient norm was not finite (its
    step, loss and gradient norm), all on the device. `add` queues a few element-wise kernels and never waits;
    `read` brings the five numbers to the host in one copy (it waits for the device: call it on log steps and
    before every checkpoint). The first bad step is kept however many steps pass before the next `read`, so a
    divergence is reported at the step where it happened, not where it was noticed.

    check_grad_norm=False (fp16 loss scaling): a non-finite gradient is an overflow that GradScaler skips, not a
    divergence; only the loss counts."""

    def __init__(self, device, check_grad_norm=True):
        self.check_grad_norm = check_grad_norm
        nan = float('nan')
        self.last = torch.full((2,), nan, dtype=torch.float64, device=device)       # loss, gradient norm
        self.first_bad = torch.full((3,), nan, dtype=torch.float64, device=device)  # step, loss, norm (nan: none)

    def add(self, step, loss, grad_norm):
        """Record step `step` (an int) with its loss and gradient norm (0-d tensors on the device)."""
        self.last = torch.stack([loss.detach().double(), grad_norm.detach().double()])
        checked = self.last if self.check_grad_norm else self.last[:1]
        first = ~torch.isfinite(checked).all() & self.first_bad[0].isnan()  # bad, and nothing bad before it
        now = torch.cat([self.last.new_full((1,), step), self.last])        # new_full: a fill, no host copy
        self.first_bad = torch.where(first, now, self.first_bad)

    def read(self):
        """-> (loss, gradient norm) of the last step, and None or (step, loss, gradient norm) of the first
        non-finite one. Waits for the device."""
        loss, norm, bad_step, bad_loss, bad_norm = torch.cat([self.last, self.first_bad]).tolist()
        return loss, norm, None if math.isnan(bad_step) else (int(bad_step), bad_loss, bad_norm)
