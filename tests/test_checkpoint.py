"""Checkpoints (nanodllm/checkpoint.py): round trip, weights_only safety, checks on load, atomic writes, RNG state.

    python -m pytest -q tests/test_checkpoint.py      # a few seconds
"""
import argparse
import os

import numpy as np
import pytest
import torch

from nanodllm import checkpoint, data
from nanodllm.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from nanodllm.config import get_config
from nanodllm.model import Model
from scripts import make_corpus


def _model():
    torch.manual_seed(0)
    return Model(get_config('nano', 257, 16))


def _save(path, family='mdlm', **extra):
    model = _model()
    save_checkpoint(str(path), make_checkpoint(model, model.cfg, {'size': 'nano'}, family, {'loss_type': 'low_var'}
                                               if family == 'mdlm' else {}, 'byte', step=3, **extra))
    return model


class Evil:
    """Unpickling this calls open(path, 'w'): the stand-in for arbitrary code in a crafted checkpoint."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def test_round_trip_restores_the_logits(tmp_path):
    model = _save(tmp_path / 'ckpt.pt')
    loaded, ckpt = load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert ckpt['step'] == 3 and ckpt['family'] == 'mdlm' and ckpt['nanodllm_checkpoint'] == checkpoint.VERSION
    x = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(x, attn='full'), model(x, attn='full'))


def test_a_crafted_pickle_is_refused_and_runs_no_code(tmp_path):
    marker, path = tmp_path / 'code_ran', tmp_path / 'evil.pt'
    torch.save({'nanodllm_checkpoint': 2, 'model': Evil(str(marker))}, path)
    with pytest.raises(checkpoint.CheckpointError, match='refusing to load .*weights_only=True'):
        load_checkpoint(str(path))
    assert not marker.exists()
    torch.load(path, weights_only=False)   # the payload is real: an unsafe load does run it
    assert marker.exists()


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    _save(tmp_path / 'ckpt.pt')
    good = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    with pytest.raises(ValueError, match='no checkpoint at'):
        load_checkpoint(str(tmp_path / 'missing.pt'))
    (tmp_path / 'truncated.pt').write_bytes((tmp_path / 'ckpt.pt').read_bytes()[:1000])
    with pytest.raises(ValueError, match='truncated'):
        load_checkpoint(str(tmp_path / 'truncated.pt'))
    torch.save({'weights': 1}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='not a nanodllm checkpoint'):
        load_checkpoint(str(tmp_path / 'other.pt'))
    edits = {'do not fit its model_config': lambda c: c['model_config'].update(n_embd=32, n_head=2),
             "unknown family 'nope'": lambda c: c.update(family='nope'),
             'do not have the keys': lambda c: c.update(family='duo'),                 # mdlm options, duo sampler
             "loss_type 'mse'": lambda c: c['options'].update(loss_type='mse'),
             'does not fit the gpt2 tokenizer': lambda c: c.update(tokenizer='gpt2'),
             'non-finite weights': lambda c: c['model']['head.weight'].view(-1)[0].fill_(float('inf')),
             'step': lambda c: c.update(step=-1)}
    for message, edit in edits.items():
        ckpt = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
        ckpt['model'] = {k: v.clone() for k, v in good['model'].items()}
        edit(ckpt)
        torch.save(ckpt, tmp_path / 'edited.pt')
        with pytest.raises(ValueError, match=message) as e:
            load_checkpoint(str(tmp_path / 'edited.pt'))
        assert '\n' not in str(e.value)


def test_only_tensors_and_plain_types_can_be_saved(tmp_path):
    model = _model()
    for bad in (np.float64(1.0), argparse.Namespace(lr=1.0), torch.nn.Parameter(torch.zeros(1)), {1, 2}):
        with pytest.raises(TypeError, match='plain Python types'):
            make_checkpoint(model, model.cfg, {'size': 'nano'}, 'ar', {}, 'byte', extra=bad)
    ckpt = make_checkpoint(model, model.cfg, argparse.Namespace(size='nano'), 'ar', {}, 'byte', val_loss=None,
                           rng=checkpoint.all_rng_states('cpu'), optimizer=torch.optim.AdamW(
                               model.parameters()).state_dict())
    save_checkpoint(str(tmp_path / 'ok.pt'), ckpt)                         # Namespace -> dict; AdamW state is plain
    assert torch.load(tmp_path / 'ok.pt', weights_only=True)['args'] == {'size': 'nano'}


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pt'
    _save(path)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b'partial')
        raise KeyboardInterrupt                                            # Ctrl-C in the middle of the write
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        _save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['ckpt.pt']
    folder = tmp_path / 'folder.pt'
    folder.mkdir()                                                         # a directory where the file should be
    with pytest.raises(OSError):
        _save(folder)
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'folder.pt'] and not os.listdir(folder)


def test_temporary_names_are_unique_per_writer(tmp_path, monkeypatch):
    names = []
    real_replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda a, b: (names.append(os.path.basename(a)), real_replace(a, b)))
    for _ in range(2):
        checkpoint.atomic_write(str(tmp_path / 'x'), lambda f: f.write(b'1'))
    assert names[0] != names[1] and all(f'.{os.getpid()}.' in n and n.endswith('.tmp') for n in names)


def test_rng_state_round_trip_continues_the_stream():
    torch.manual_seed(5)
    state = checkpoint.rng_state('cpu')
    a = torch.rand(4)
    torch.manual_seed(6)
    checkpoint.set_rng_state(state, 'cpu')
    assert torch.equal(torch.rand(4), a)


def test_resume_converts_the_data_position_to_another_micro_batch(tmp_path):
    """The loader position is kept in sequences: 3 micro-steps of 4 sequences = 6 of 2 = 12 of 1."""
    meta = data.prepare(make_corpus(tmp_path / 'text.txt'), 'byte', out_dir=tmp_path / 'data')
    train = os.path.join(meta['out_dir'], 'train.bin')
    model = _model()
    opt = torch.optim.AdamW(model.parameters())
    loader = data.Loader(train, 4, 16, seed=1)
    for _ in range(3):
        loader.next_batch()
    ckpt = make_checkpoint(model, model.cfg, dict(size='nano', seq_len=16, seed=1), 'mdlm', {'loss_type': 'low_var'},
                           'byte', step=3, optimizer=opt.state_dict(), loader=loader.state_dict(), scaler={},
                           rng=checkpoint.all_rng_states('cpu'), layout=dict(batch_size=4, micro_batch_size=4,
                                                                               world_size=1))
    save_checkpoint(str(tmp_path / 'ckpt.pt'), ckpt)
    expected = dict(family='mdlm', size='nano', seq_len=16, seed=1, batch_size=4)
    small = data.Loader(train, 1, 16, seed=1)
    _, note = checkpoint.resume(str(tmp_path / 'ckpt.pt'), _model(), torch.optim.AdamW(_model().parameters()), None,
                                small, expected)
    assert small.state_dict()['step'] == 12 and 'micro-batch size' in note
    nxt = torch.cat([small.next_batch() for _ in range(4)])
    assert torch.equal(nxt, loader.next_batch())                           # the same 4 sequences come next
    with pytest.raises(ValueError, match="--resume: --seed is 2 here but 1"):
        checkpoint.resume(str(tmp_path / 'ckpt.pt'), _model(), opt, None, small, dict(expected, seed=2))


def test_restore_rng_continues_each_rank_or_restarts_when_the_process_count_changed():
    torch.manual_seed(1)
    ranks = [checkpoint.rng_state('cpu'), None]
    after = torch.rand(3)
    torch.manual_seed(2)
    ranks[1] = checkpoint.rng_state('cpu')
    ckpt = dict(rng=ranks, step=10)
    assert checkpoint.restore_rng(ckpt, seed=1, device='cpu', rank=0, world=2) == ''     # rank 0's own stream
    assert torch.equal(torch.rand(3), after)
    note = checkpoint.restore_rng(ckpt, seed=1, device='cpu', rank=0, world=1)
    assert 'process count changed (2 -> 1)' in note and not torch.equal(torch.rand(3), after)
