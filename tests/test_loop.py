"""The training loop's plumbing, without running train.py: the prefetcher's data position (nanodllm/loop.py), the
device-side step record and its first non-finite step, the background checkpoint writer (nanodllm/checkpoint.py),
and full state dicts that stay put while training goes on (nanodllm/parallel.py).

    python -m pytest -q tests/test_loop.py          # ~2 s
"""
import errno
import json
import os

import numpy as np
import pytest
import torch
from helpers import make_model

from nanodllm import ar, checkpoint, data, loop, parallel


@pytest.fixture
def loader_path(tmp_path):
    path = tmp_path / 'train.bin'
    np.arange(4000, dtype=np.uint16).tofile(path)  # 4000 tokens: 125 blocks of 32
    (tmp_path / 'meta.json').write_text(json.dumps({'dtype': 'uint16'}))
    return str(path)


def test_the_prefetcher_returns_the_loader_batches_and_saves_the_position_of_the_one_in_flight(loader_path):
    """Batches come in the loader's order; a state taken with a batch prefetched (or with none) makes a fresh loader
    continue with exactly the batch the prefetcher would have returned next."""
    plain = data.Loader(loader_path, 4, 32, seed=3)
    want = [plain.next_batch() for _ in range(40)]  # more than an epoch (31 batches): the epoch boundary too
    assert plain.epoch == 1
    batches = loop.Prefetcher(data.Loader(loader_path, 4, 32, seed=3))
    for i in range(40):
        if i % 3 == 0:  # sometimes with a batch in flight, sometimes without
            batches.prefetch()
        state = batches.state_dict()
        again = data.Loader(loader_path, 4, 32, seed=3)
        again.load_state_dict(state)
        assert torch.equal(again.next_batch(), want[i]), i   # the resumed loader reads batch i next ...
        assert torch.equal(batches.next_batch(), want[i]), i  # ... and so does the prefetcher


def test_the_step_record_keeps_the_first_non_finite_step_until_it_is_read():
    record = loop.StepRecord('cpu')
    assert record.read()[2] is None
    record.add(0, torch.tensor(2.5), torch.tensor(0.5))
    assert record.read() == (2.5, 0.5, None)
    record.add(1, torch.tensor(2.0), torch.tensor(float('inf')))   # the first bad step: its gradient norm
    record.add(2, torch.tensor(float('nan')), torch.tensor(1.0))   # later ones do not replace it
    record.add(3, torch.tensor(1.5), torch.tensor(0.25))
    assert record.read() == (1.5, 0.25, (1, 2.0, float('inf')))
    scaled = loop.StepRecord('cpu', check_grad_norm=False)          # fp16: GradScaler skips overflowing gradients
    scaled.add(5, torch.tensor(2.0), torch.tensor(float('inf')))
    assert scaled.read()[2] is None
    scaled.add(6, torch.tensor(float('inf')), torch.tensor(1.0))    # ... but a non-finite loss is a divergence
    assert scaled.read()[2] == (6, float('inf'), 1.0)


def test_full_state_dicts_are_copies_that_training_does_not_change():
    """What the background writer gets must not move under it: after another optimizer step the gathered model and
    AdamW states (the CPU step counters included) are still those of the step they were taken at."""
    model = make_model(vocab_size=23, n_layer=1, n_head=2, n_embd=16).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 22, (2, 16))

    def step():
        ar.loss(model, x)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    step()
    model_state, optim_state = parallel.full_state_dict(model, optimizer)
    frozen = {k: v.clone() for k, v in model_state.items()}
    frozen_optim = {i: {k: v.clone() for k, v in s.items()} for i, s in optim_state['state'].items()}
    step()
    assert all(torch.equal(model_state[k], frozen[k]) for k in frozen)
    assert not all(torch.equal(model.state_dict()[k], frozen[k]) for k in frozen)  # the model did move
    for i, s in frozen_optim.items():
        assert all(torch.equal(optim_state['state'][i][k], v) for k, v in s.items()), i


def test_the_background_writer_writes_atomically_and_reports_a_failure_at_the_next_check(tmp_path, monkeypatch):
    path = str(tmp_path / 'ckpt.pt')
    writer = checkpoint.BackgroundWriter()
    writer.start(path, {'step': 1, 'w': torch.ones(3)})
    assert writer.wait() is None and torch.load(path, weights_only=True)['step'] == 1
    real_save = torch.save

    def full(obj, f):
        f.write(b'half a checkpoint')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full)
    writer.start(path, {'step': 2})
    assert writer.failed(wait=True)
    message = writer.wait()
    assert message.startswith(f"could not save {path}: No space left on device") and '\n' not in message
    assert writer.wait() is None and not writer.failed()              # reported once
    assert torch.load(path, weights_only=True)['step'] == 1            # the previous checkpoint, intact
    assert os.listdir(tmp_path) == ['ckpt.pt']                         # no temporary file left
    monkeypatch.setattr(torch, 'save', real_save)


def test_a_failed_first_save_says_no_checkpoint_was_written_and_never_quotes_torch(tmp_path, monkeypatch):
    """torch's serializer fails with C++ internals (a real full disk: '[enforce fail at inline_container.cc:672]
    ... unexpected pos'); the line gives the space left instead, and, with no earlier checkpoint, says that none
    was written rather than 'the previous checkpoint is kept, continue with --resume'."""
    path = str(tmp_path / 'ckpt.pt')

    def broken(obj, f):
        f.write(b'half a checkpoint')
        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')
    monkeypatch.setattr(torch, 'save', broken)
    writer = checkpoint.BackgroundWriter()
    writer.start(path, {'step': 1})
    message = writer.wait()
    assert message.startswith(f"could not save {path}: the write failed (") and 'MiB free on that disk' in message
    assert 'no checkpoint was written' in message and '--resume' not in message and 'previous' not in message
    assert 'enforce' not in message and 'inline_container' not in message and '\n' not in message
    assert os.listdir(tmp_path) == []
