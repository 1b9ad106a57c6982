"""Validation on a fixed set of sequences (nanodllm/validation.py): the same number whatever the micro-batch size and
the number of processes, the same at every call, and invisible to the training random stream.

    python -m pytest -q tests/test_validation.py      # a few seconds
"""
import os

import pytest
import torch

from helpers import make_model
from nanodllm import ar, data, duo, eso, mdlm, validation
from scripts import make_corpus

CASES = [(ar, {}), (mdlm, {'loss_type': 'low_var'}), (duo, {}),
         (eso, {'loss_type': 'low_var', 'alpha0': 1.0, 'batch_split': 1.0}),
         (eso, {'loss_type': 'low_var', 'alpha0': 0.5, 'batch_split': 0.5})]


@pytest.fixture(scope='module')
def val_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('val')
    meta = data.prepare(make_corpus(tmp / 'text.txt'), 'byte', out_dir=tmp / 'data', val_fraction=0.2)
    return os.path.join(meta['out_dir'], 'val.bin')


@pytest.mark.parametrize('family,options', CASES, ids=['ar', 'mdlm', 'duo', 'eso', 'eso-mixed'])
def test_the_validation_loss_does_not_depend_on_micro_batch_or_processes(val_path, family, options):
    model, N, L = make_model(vocab_size=257, seq_len=32), 7, 32
    rng = torch.get_rng_state()
    one = validation.validation_sums(model, family, options, val_path, N, micro=8, seq_len=L)
    assert torch.equal(torch.get_rng_state(), rng)                         # training's stream is untouched
    assert one[1] > 0 and torch.equal(validation.validation_sums(model, family, options, val_path, N, 8, L), one)
    for micro in (1, 3):
        torch.testing.assert_close(validation.validation_sums(model, family, options, val_path, N, micro, L), one,
                                   rtol=1e-5, atol=0)
    for micro, world in ((1, 2), (2, 2), (1, 3)):                          # ranks summed as the all-reduce does
        ranks = sum(validation.validation_sums(model, family, options, val_path, N, micro, L, rank=r, world=world)
                    for r in range(world))
        torch.testing.assert_close(ranks, one, rtol=1e-5, atol=0)
    more = validation.validation_sums(model, family, options, val_path, N + 1, 8, L)
    assert more[1] > one[1]                                                # the set is really N sequences

