"""Task evaluation (nanodllm/taskeval.py): the scorer and the pipeline can reach the top, not only the bottom: a
tiny model fine-tuned on a few records of each task decodes them exactly (accuracy 1.0 on those records) with the
conditional losses and samplers; the canvas keeps the prompt; a response is cut at the first EOS."""
import math

import pytest
import torch

from nanodllm import data, taskeval, tasks
from nanodllm.families import get_family
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


def overfit(family_name, records, L, steps=300, options=None):
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


@pytest.mark.slow
@pytest.mark.parametrize('task, params, L', [('sudoku', dict(size=4, blanks=6), 40),
                                             ('countdown', dict(numbers=3), 32), ('arith', dict(steps=1), 80)])
def test_a_fine_tuned_tiny_ar_model_decodes_its_records_exactly(task, params, L):
    """AR memorises three records of each task (two of arith, whose rows are longer) in 300 steps and decodes every one exactly (accuracy 1.0), and the
    untrained model is scored 0 by the same pipeline: the top is earned, not given."""
    records = tasks.make_splits(task, 3 if task != 'arith' else 2, 0, 0, **params)['train']
    model, ckpt = overfit('ar', records, L)
    [r] = taskeval.evaluate(model, ckpt, task, records, taskeval.decode_settings('ar', []))
    assert r['accuracy'] == 1.0 and r['n'] == len(records) and r['nfe'] >= 1 and r['tokens_per_s'] > 0, r
    if task == 'sudoku':
        assert r['cells'] == 1.0
    untrained, _ = overfit('ar', records, L, steps=0)
    assert taskeval.evaluate(untrained, ckpt, task, records, [('l2r', None, None)])[0]['accuracy'] == 0.0


@pytest.mark.slow
def test_a_fine_tuned_tiny_mdlm_model_learns_its_sudoku_records():
    """MDLM memorises far more slowly than AR here (300 steps do not fit three whole grids: measured cells 0.6-0.85,
    no grid exact), so the check is relative: every order's cell accuracy is far above the untrained model's."""
    records = tasks.make_splits('sudoku', 3, 0, 0, size=4, blanks=6)['train']
    model, ckpt = overfit('mdlm', records, 40)
    settings = taskeval.decode_settings('mdlm', [23])
    trained = taskeval.evaluate(model, ckpt, 'sudoku', records, settings)
    untrained = taskeval.evaluate(overfit('mdlm', records, 40, steps=0)[0], ckpt, 'sudoku', records, settings)
    for t, u in zip(trained, untrained):
        assert t['cells'] > u['cells'] + 0.3, (t, u)


def test_a_users_gsm8k_file_is_scored_as_gsm8k(tmp_path):
    path = tmp_path / 'test.jsonl'
    path.write_text('{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\\n#### 2"}\n')
    name, records, _ = taskeval.load_task(str(path))
    assert name == 'gsm8k' and records == [dict(prompt='1+1?\n', response='1+1=<<1+1=2>>2\n#### 2')]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        taskeval.load_task('nope')
