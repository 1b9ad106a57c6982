"""Task evaluation (nanodllm/taskeval.py): the scorer and the pipeline can reach the top, not only the bottom: a
tiny model fine-tuned on a few records of each task decodes them exactly (accuracy 1.0 on those records) with the
conditional losses and samplers; the canvas keeps the prompt; a response is cut at the first EOS."""
import math

import pytest
import torch

from nanodllm import data, taskeval, tasks
from nanodllm.common import get_family
from nanodllm.config import ModelConfig
from nanodllm.model import Model

TOK = data.get_tokenizer('byte')


def rows(records, L):
    """prompt + response + EOS, padded with EOS to L, and the given mask (True on the prompt) (as records.py)."""
    x, given = torch.full((len(records), L), TOK.eos, dtype=torch.long), torch.zeros(len(records), L, dtype=torch.bool)
    for i, r in enumerate(records):
        p, s = TOK.encode(r['prompt']), TOK.encode(r['response'])
        x[i, :len(p) + len(s)] = torch.tensor(p + s)
        given[i, :len(p)] = True
    return x, given


def overfit(family_name, records, L, steps=400, options=None):
    """A 4-layer, 128-wide model trained on the records' rows with the family's conditional loss (full batch, lr 1e-3
    with warmup and cosine): enough to memorise a few records (a 2-layer, 64-wide one plateaus)."""
    torch.manual_seed(0)
    model = Model(ModelConfig(vocab_size=257, n_layer=4, n_head=4, n_embd=128, seq_len=L))
    family, (x, given) = get_family(family_name), rows(records, L)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group['lr'] = 1e-3 * min(1, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        nll, n = family.loss(model, x, given=given, **(options or {}))
        opt.zero_grad()
        (nll / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval(), dict(family=family_name, tokenizer='byte', options=options or {})


def test_decode_response_cuts_at_the_first_eos():
    row = torch.tensor(TOK.encode('12\n34') + [TOK.eos, 65, TOK.eos])
    assert taskeval.decode_response(row, 3, TOK) == '34'
    assert taskeval.decode_response(torch.tensor(TOK.encode('ab')), 1, TOK) == 'b'  # no EOS: to the end


@pytest.mark.parametrize('family_name', ['ar', 'mdlm', 'duo', 'eso'])
def test_a_fine_tuned_tiny_model_decodes_its_sudoku_records(family_name):
    records = tasks.make_splits('sudoku', 4, 0, 0, size=4, blanks=6)['train']
    model, ckpt = overfit(family_name, records, 40, options=dict(loss_type='elbo') if family_name == 'mdlm' else None)
    settings = taskeval.decode_settings(family_name, [24])
    results = taskeval.evaluate(model, ckpt, 'sudoku', records, settings)
    for r in results:
        assert r['accuracy'] == 1.0 and r['cells'] == 1.0, (family_name, r)
        assert r['nfe'] >= 1 and r['tokens_per_s'] > 0 and r['n'] == 4
    # a model that learned nothing is scored low by the same pipeline (the top is earned, not given)
    untrained, _ = overfit(family_name, records, 40, steps=0)
    assert taskeval.evaluate(untrained, ckpt, 'sudoku', records, settings[:1])[0]['accuracy'] == 0.0


@pytest.mark.parametrize('task, params, L', [('countdown', dict(numbers=3), 32), ('arith', dict(steps=1), 96)])
def test_a_fine_tuned_tiny_model_decodes_countdown_and_arith_records(task, params, L):
    records = tasks.make_splits(task, 4, 0, 0, **params)['train']
    for family_name in ('ar', 'mdlm'):
        model, ckpt = overfit(family_name, records, L, steps=400)
        for r in taskeval.evaluate(model, ckpt, task, records, taskeval.decode_settings(family_name, [L])):
            assert r['accuracy'] == 1.0, (task, family_name, r)


def test_a_users_gsm8k_file_is_scored_as_gsm8k(tmp_path):
    path = tmp_path / 'test.jsonl'
    path.write_text('{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\\n#### 2"}\n')
    name, records, _ = taskeval.load_task(str(path))
    assert name == 'gsm8k' and records == [dict(prompt='1+1?\n', response='1+1=<<1+1=2>>2\n#### 2')]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        taskeval.load_task('nope')
