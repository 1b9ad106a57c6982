"""
Tests for nanodllm/records.py (prompt/response records -> rows + given masks) and the records side of data.Loader /
eval_batches: GSM8K's fields, the row layout written out independently, dropped records, the split, the cache, an
hf: stand-in, and each bad input as one ValueError line. CPU, no network, a second or two.

    python -m pytest -q tests/test_records.py
"""
import importlib.machinery, json, sys, types

import numpy as np
import pytest
import torch

from nanodllm import data, records


def write(path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return str(path)


def expected_row(tok, prompt, response, L):
    """The row, written out from the definition: prompt ids, response ids, then EOS up to L; given = the prompt."""
    ids = tok.encode(prompt) + tok.encode(response)
    return ids + [tok.eos] * (L - len(ids)), [True] * len(tok.encode(prompt)) + [False] * (L - len(tok.encode(prompt)))


def test_eos():
    assert data.get_tokenizer('byte').eos == 0 and data.get_tokenizer('gpt2').eos == 50256
    assert data.get_tokenizer('gpt2').encode('<|endoftext|>') != [50256]  # text never encodes to EOS


@pytest.mark.parametrize('tokenizer', ['byte', 'gpt2'])
def test_gsm8k_fields_rows_and_given(tmp_path, monkeypatch, tokenizer):
    """question/answer read as prompt = question + newline, response = answer; each record one row of exactly L
    tokens, EOS-padded; given True exactly on the prompt; rows come out of the Loader with their own given mask."""
    monkeypatch.chdir(tmp_path)
    rows = [{'question': f'Tom has {i} apples and buys {i + 3}. How many?', 'answer': f'{i} + {i + 3} = {2 * i + 3}'
             f'\n#### {2 * i + 3}'} for i in range(40)]
    path = write(tmp_path / 'gsm8k.jsonl', rows)
    tok, L = data.get_tokenizer(tokenizer), 64
    assert records.detect(path)
    meta = records.prepare_any(path, tokenizer, L)
    assert meta['kind'] == 'records' and meta['n_records'] == 40 and meta['dropped'] == 0
    val = [i for i in range(40) if data._is_val(i, 0.05)]                              # records 19 and 39
    assert val == [19, 39] and (meta['train_rows'], meta['val_rows']) == (38, 2)
    for split, index in (('train', [i for i in range(40) if i not in val]), ('val', val)):
        x = np.fromfile(f"{meta['out_dir']}/{split}.bin", dtype=meta['dtype']).reshape(-1, L)
        plen = np.fromfile(f"{meta['out_dir']}/{split}.prompt.bin", dtype=np.int32)
        for k, i in enumerate(index):
            ids, given = expected_row(tok, rows[i]['question'] + '\n', rows[i]['answer'], L)
            assert x[k].tolist() == ids and (np.arange(L) < plen[k]).tolist() == given
    loader = data.Loader(f"{meta['out_dir']}/train.bin", 4, L, seed=3, prompt_path=records.prompt_path(meta, 'train'))
    plain = data.Loader(f"{meta['out_dir']}/train.bin", 4, L, seed=3)                  # the same block order
    for _ in range(12):                                                                 # past an epoch (9 steps)
        (x0, given), x = loader.next_batch(), plain.next_batch()
        assert torch.equal(x0, x) and given.dtype == torch.bool and given.shape == x.shape
        for row, g in zip(x0.tolist(), given.tolist()):
            n = g.index(False)
            assert all(g[:n]) and not any(g[n:]) and tok.decode(row[:n]).endswith('?\n') and row[-1] == tok.eos
    assert loader.state_dict() == plain.state_dict()
    (x0, given), = data.eval_batches(f"{meta['out_dir']}/val.bin", 2, L, prompt_path=records.prompt_path(meta, 'val'))
    assert tok.decode(x0[1][:given[1].sum()]) == rows[39]['question'] + '\n'
    assert data.split_batch(x0) == (x0, None) and records.prompt_path({'out_dir': 'x'}, 'train') is None


def test_long_records_dropped_and_counted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{'prompt': 'ab', 'response': 'c' * n} for n in (1, 5, 13, 14, 30, 2)]     # need 2 + n + 1 tokens
    meta = records.prepare(write(tmp_path / 'r.jsonl', rows), 'byte', 16)
    assert meta['n_records'] == 6 and meta['dropped'] == 2                             # n = 14 and 30
    assert meta['train_rows'] + meta['val_rows'] == 4 and meta['val_rows'] == 1        # < 20 records: the last row
    assert np.fromfile(f"{meta['out_dir']}/val.bin", dtype=meta['dtype']).tolist() == list(b'abcc') + [0] * 12
    assert '2 dropped (longer than --seq-len 16)' in records.summary(meta)
    ids = np.fromfile(f"{meta['out_dir']}/train.bin", dtype=meta['dtype']).reshape(-1, 16)
    assert ids[2].tolist() == list(b'ab' + b'c' * 13) + [0]                           # exactly fits: one EOS


def test_cache_is_reused_and_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / 'r.jsonl', [{'prompt': 'p', 'response': f'r{i}'} for i in range(5)])
    meta = records.prepare(path, 'byte', 8)
    assert records.prepare(path, 'byte', 8) == meta                                    # reused
    assert records.prepare(path, 'byte', 9)['out_dir'] != meta['out_dir']              # the row length is keyed
    write(tmp_path / 'r.jsonl', [{'prompt': 'p', 'response': f's{i}'} for i in range(5)])
    assert records.prepare(path, 'byte', 8)['out_dir'] != meta['out_dir']              # so is the content


def test_text_is_not_records(tmp_path):
    assert not records.detect('shakespeare')
    assert not records.detect(write(tmp_path / 't.jsonl', [{'text': 'hello', 'prompt': 'p', 'response': 'r'}]))
    (tmp_path / 'a.txt').write_text('plain text')
    assert not records.detect(str(tmp_path / 'a.txt'))


@pytest.mark.parametrize('rows, call, message', [
    ([{'q': 'a', 'a': 'b'}], 'detect', r"^the records of .* have neither a 'text' field nor 'prompt'/'response' \(or "
     r"GSM8K's 'question'/'answer'\) fields \(the first has 'q', 'a'\): pass the right --text-field"),
    ([{'prompt': 'a' * 20, 'response': 'b' * 20}] * 3, 'prepare',
     r"^none of the 3 records of .* fits a row of --seq-len 16 \(the shortest needs 41 tokens: prompt \+ response \+ "
     r"EOS\): raise --seq-len to at least 41$"),
    ([{'prompt': 'a', 'response': 'b'}, {'prompt': 'a'}], 'prepare', r":2 has no 'prompt'/'response' .* fields \(it "
     r"has 'prompt'\): give every record the same fields$"),
    ([{'prompt': 'a', 'response': 3}], 'prepare', r":1: the response is a JSON int, not a string"),
    ([{'prompt': 'a\u0000', 'response': 'b'}], 'prepare', r":1 holds a NUL character, the byte tokenizer's EOS"),
    ([['prompt', 'response']], 'prepare', r":1 is a JSON list, not an object"),
])
def test_bad_records_one_line(tmp_path, monkeypatch, rows, call, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / 'bad.jsonl', rows)
    with pytest.raises(ValueError, match=message) as e:
        records.detect(path) if call == 'detect' else records.prepare(path, 'byte', 16)
    assert '\n' not in str(e.value)
    assert not list(tmp_path.glob('data/*.partial'))                                   # nothing half-written stays


def test_hf_gsm8k_stand_in(tmp_path, monkeypatch):
    """hf:openai/gsm8k:main through the optional `datasets` (a stand-in module: no hub here); once prepared, neither
    detect nor prepare touches the hub again."""
    rows = [{'question': f'q{i}?', 'answer': f'a{i} #### {i}'} for i in range(25)]
    calls = []
    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter(rows)
    fake = types.ModuleType('datasets')
    fake.__spec__, fake.load_dataset = importlib.machinery.ModuleSpec('datasets', None), load_dataset
    monkeypatch.setitem(sys.modules, 'datasets', fake)
    monkeypatch.chdir(tmp_path)
    meta = records.prepare_any('hf:openai/gsm8k:main', 'gpt2', 32)
    assert calls[0] == ('openai/gsm8k', 'main', 'train', True) and len(calls) == 2    # detect's peek + the rows
    assert meta['out_dir'].startswith('data/gsm8k-main_gpt2_rows32_') and meta['n_records'] == 25
    tok = data.get_tokenizer('gpt2')
    first = np.fromfile(f"{meta['out_dir']}/train.bin", dtype=meta['dtype'])[:32].tolist()
    assert first == expected_row(tok, 'q0?\n', 'a0 #### 0', 32)[0]
    assert records.prepare_any('hf:openai/gsm8k:main', 'gpt2', 32) == meta and len(calls) == 2   # cached
