"""
Tests for nanodllm/data.py: tokenizers, prepare() basics, Loader, eval_batches. CPU only, no network, a few seconds.
Streaming, caches, locks, resume and bad inputs of prepare(): tests/test_prepare.py.

    python -m pytest -q tests/test_data.py
"""
import json, os, random

import numpy as np
import pytest
import torch

from nanodllm.corpus import _cut
from nanodllm.data import MASK_CHAR, Loader, eval_batches, get_tokenizer, main, prepare

TEXT = "Hello world! Ünïcödé, emoji 🙂, tabs\tand  double  spaces\n\nand <|endoftext|> as plain text.\n"

# -----------------------------------------------------------------------------
# tokenizers

def test_byte_tokenizer():
    tok = get_tokenizer('byte')
    assert (tok.name, tok.n_vocab, tok.bos) == ('byte', 256, 10)
    ids = tok.encode(TEXT)
    assert ids == list(TEXT.encode('utf-8')) and max(ids) < 256
    assert tok.decode(ids) == TEXT
    assert tok.decode(torch.tensor(ids)) == TEXT                      # tensors work too
    assert tok.decode([72, 256, 105]) == 'H' + MASK_CHAR + 'i'       # the mask id (= n_vocab) is visible
    assert tok.decode([72, 105], mask_id=105) == 'H' + MASK_CHAR

def test_gpt2_tokenizer():
    tok = get_tokenizer('gpt2')
    assert (tok.name, tok.n_vocab, tok.bos) == ('gpt2', 50257, 50256)
    assert tok.encode('Hello world') == [15496, 995]
    assert tok.encode('The quick brown fox') == [464, 2068, 7586, 21831]
    assert tok.encode('Hello, world!') == [15496, 11, 995, 0]
    assert tok.encode('\n') == [198] and tok.encode(' the') == [262]
    assert 50256 not in tok.encode(TEXT)                              # corpus text never makes specials
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.decode([15496, 50257, 995]) == 'Hello' + MASK_CHAR + ' world'
    assert tok.decode([50256]) == '<|endoftext|>'

def test_unknown_tokenizer():
    with pytest.raises(ValueError, match="'byte', 'gpt2'"):
        get_tokenizer('bpe')

@pytest.mark.parametrize('seed', range(3))
def test_cut_keeps_gpt2_ids(seed):
    # prepare() encodes texts in pieces; the pieces must give exactly the ids of the whole text. The words include
    # whitespace on which Python's regex and tiktoken's disagree (\x1c-\x1f are \s only for Python) and Unicode
    # spaces that are neither ASCII nor cut points.
    tok = get_tokenizer('gpt2')
    rng = random.Random(seed)
    words = ['the', 'The', ' ', '  ', '\n', '\n\n', '\n \n', 'king', "'s", '--', '!', '123', 'é', ' \t', '🙂', '\r\n',
             '\x1c', '!\x1f', '\xa0', '\u3000', '\x0b', '\x0c', "'", 'll', '\t\t', ' 4', '?!']
    text = ''.join(rng.choice(words) for _ in range(20000))
    pieces = _cut(text, size=50)
    assert len(pieces) > 100 and ''.join(pieces) == text
    assert sum((tok.encode(p) for p in pieces), []) == tok.encode(text)

# -----------------------------------------------------------------------------
# prepare

def read_bins(meta):
    out = meta['out_dir']
    train = np.fromfile(f'{out}/train.bin', dtype=meta['dtype'])
    val = np.fromfile(f'{out}/val.bin', dtype=meta['dtype'])
    assert (len(train), len(val)) == (meta['train_tokens'], meta['val_tokens'])
    return train, val

@pytest.mark.parametrize('name', ['byte', 'gpt2'])
def test_prepare_file(tmp_path, name):
    text = TEXT * 50
    (tmp_path / 'my.txt').write_text(text, encoding='utf-8')
    meta = prepare(str(tmp_path / 'my.txt'), name, out_dir=tmp_path / 'out', val_fraction=0.1)
    train, val = read_bins(meta)
    tok = get_tokenizer(name)
    ids = np.concatenate([train, val])
    assert train.dtype == np.uint16 and len(val) == int(len(ids) * 0.1) > 0   # one document: val = the last 10%
    assert tok.decode(ids) == text
    assert ids.tolist() == tok.encode(text)
    on_disk = json.loads((tmp_path / 'out' / 'meta.json').read_text())
    assert on_disk['tokenizer'] == name and on_disk['n_vocab'] == tok.n_vocab and on_disk['bos'] == tok.bos
    assert sorted(os.listdir(tmp_path / 'out')) == ['meta.json', 'train.bin', 'val.bin']
    # a second call with the same source is skipped (files untouched); a changed source never overwrites the cache
    mtime = (tmp_path / 'out' / 'train.bin').stat().st_mtime_ns
    assert prepare(str(tmp_path / 'my.txt'), name, out_dir=tmp_path / 'out', val_fraction=0.1) == meta
    assert (tmp_path / 'out' / 'train.bin').stat().st_mtime_ns == mtime
    (tmp_path / 'my.txt').write_text(text + 'more', encoding='utf-8')
    with pytest.raises(ValueError, match='pass another --out-dir, or delete it'):
        prepare(str(tmp_path / 'my.txt'), name, out_dir=tmp_path / 'out', val_fraction=0.1)
    assert (tmp_path / 'out' / 'train.bin').stat().st_mtime_ns == mtime
    meta2 = prepare(str(tmp_path / 'my.txt'), name, out_dir=tmp_path / 'out2', val_fraction=0.1)
    assert tok.decode(np.concatenate(read_bins(meta2))) == text + 'more'
    assert not list(tmp_path.glob('*.partial')) and not list(tmp_path.glob('**/*.tmp'))

@pytest.mark.parametrize('name, sep', [('byte', '\n\n'), ('gpt2', '<|endoftext|>')])
def test_prepare_folder(tmp_path, monkeypatch, name, sep):
    docs = {'b.txt': 'Second document.\n', 'a/c.txt': 'Third, in a subfolder: über.', 'a/a.txt': 'First one.'}
    for rel, content in docs.items():
        (tmp_path / 'corpus' / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'corpus' / rel).write_text(content, encoding='utf-8')
    (tmp_path / 'corpus' / 'empty.txt').write_text('')            # skipped
    (tmp_path / 'corpus' / 'notes.md').write_text('not a .txt')   # ignored
    monkeypatch.chdir(tmp_path)                                   # default out_dir is relative to the cwd
    meta = prepare('corpus', name, val_fraction=0.0)
    key = meta['out_dir'].rsplit('_', 1)[1]
    assert meta['out_dir'] == f'data/corpus_{name}_{key}' and len(key) == 12 and meta['n_documents'] == 3
    train, val = read_bins(meta)
    assert len(val) == 0
    expected = sep.join(docs[k] for k in sorted(docs))             # sorted by path: a/a.txt, a/c.txt, b.txt
    assert get_tokenizer(name).decode(train) == expected

def test_prepare_bad_input(tmp_path):
    # the full table of bad inputs is in tests/test_prepare.py; here the three that used to differ
    with pytest.raises(ValueError, match='nope.txt does not exist'):   # was FileNotFoundError
        prepare(str(tmp_path / 'nope.txt'), out_dir=tmp_path / 'out')
    (tmp_path / 'empty.txt').write_text('')
    with pytest.raises(ValueError, match='empty.txt'):
        prepare(str(tmp_path / 'empty.txt'), out_dir=tmp_path / 'out')
    (tmp_path / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
    with pytest.raises(ValueError, match='convert it to UTF-8'):
        prepare(str(tmp_path / 'latin1.txt'), out_dir=tmp_path / 'out')

def test_cli(tmp_path, capsys):
    (tmp_path / 'x.txt').write_text('abc ' * 100)
    main(['--data', str(tmp_path / 'x.txt'), '--tokenizer', 'byte', '--out-dir', str(tmp_path / 'out'),
          '--val-fraction', '0.25'])
    assert '300 train + 100 val tokens' in capsys.readouterr().out

# -----------------------------------------------------------------------------
# Loader / eval_batches

T = 8  # seq_len

@pytest.fixture
def bins(tmp_path):
    """Byte data whose 8-token blocks are all different: 'NNNNNNN\\n' for N = 0..n-1, 100 train + 20 val blocks."""
    text = ''.join(f'{i:07d}\n' for i in range(120))
    (tmp_path / 'blocks.txt').write_text(text)
    meta = prepare(str(tmp_path / 'blocks.txt'), 'byte', out_dir=tmp_path / 'out', val_fraction=20 / 120)
    train, val = read_bins(meta)
    return tmp_path / 'out', train.astype(np.int64), val.astype(np.int64)

def block_ids(x, tokens):
    """(B, T) batch of train blocks -> their indices, checking each row is exactly that block of the .bin."""
    out = []
    for row in x.tolist():
        i = int(bytes(row[:7]).decode())
        assert row == tokens[i * T:(i + 1) * T].tolist()
        out.append(i)
    return out

def test_loader_blocks_epochs_and_ranks(bins):
    out, train, _ = bins
    one = Loader(out / 'train.bin', batch_size=6, seq_len=T, seed=3)
    two = [Loader(out / 'train.bin', batch_size=3, seq_len=T, rank=r, world_size=2, seed=3) for r in range(2)]
    assert one.steps_per_epoch == 100 // 6 == two[0].steps_per_epoch
    epoch = []
    for step in range(2 * one.steps_per_epoch + 3):  # crosses two epoch boundaries
        x = one.next_batch()
        assert x.dtype == torch.long and x.shape == (6, T)
        ids = block_ids(x, train)
        assert ids == block_ids(two[0].next_batch(), train) + block_ids(two[1].next_batch(), train)
        epoch += ids
        if step + 1 == one.steps_per_epoch:
            assert len(set(epoch)) == len(epoch) == 96     # no block repeats within an epoch
            first_epoch, epoch = epoch, []
    assert epoch[:6] != first_epoch[:6]                     # a new order each epoch
    other_seed = Loader(out / 'train.bin', batch_size=6, seq_len=T, seed=4)
    assert block_ids(other_seed.next_batch(), train) != first_epoch[:6]

def test_loader_resume(bins):
    out, _, _ = bins
    a = Loader(out / 'train.bin', batch_size=4, seq_len=T, seed=1)
    for _ in range(30):                                      # 30 > 25 steps per epoch: state is in epoch 1
        a.next_batch()
    state = a.state_dict()
    assert state['epoch'] == 1
    expected = [a.next_batch() for _ in range(30)]
    b = Loader(out / 'train.bin', batch_size=4, seq_len=T, seed=1)
    b.load_state_dict(json.loads(json.dumps(state)))         # survives a round trip through a checkpoint
    assert all(torch.equal(x, b.next_batch()) for x in expected)
    with pytest.raises(ValueError, match='same --seed'):
        Loader(out / 'train.bin', batch_size=4, seq_len=T, seed=2).load_state_dict(state)

def test_eval_batches(bins):
    out, _, val = bins
    one = list(eval_batches(out / 'val.bin', batch_size=4, seq_len=T))
    assert len(one) == 5 and all(x.shape == (4, T) for x in one)
    assert torch.equal(torch.cat(one).flatten(), torch.from_numpy(val))     # all 20 val blocks, in order
    assert all(torch.equal(x, y) for x, y in zip(one, eval_batches(out / 'val.bin', 4, T)))  # same every call
    r0 = list(eval_batches(out / 'val.bin', 2, T, rank=0, world_size=2, max_batches=3))
    r1 = list(eval_batches(out / 'val.bin', 2, T, rank=1, world_size=2, max_batches=3))
    assert len(r0) == len(r1) == 3
    assert all(torch.equal(torch.cat([x0, x1]), x) for x0, x1, x in zip(r0, r1, one))

def test_too_little_data(bins):
    out, _, _ = bins
    with pytest.raises(ValueError, match=r'100 blocks .*--batch-size or --seq-len'):
        Loader(out / 'train.bin', batch_size=51, seq_len=T, world_size=2)
    with pytest.raises(ValueError, match='--batch-size or --seq-len.*val_fraction'):
        eval_batches(out / 'val.bin', batch_size=1, seq_len=1000)            # raised at the call, not later
    with pytest.raises(ValueError, match='meta.json not found'):
        Loader(out / 'nowhere' / 'train.bin', batch_size=1, seq_len=T)

# -----------------------------------------------------------------------------
# the vendored corpus

def test_vendored_shakespeare(tmp_path):
    meta = prepare('shakespeare', 'byte', out_dir=tmp_path / 'byte')
    train, val = read_bins(meta)
    assert meta['train_tokens'] + meta['val_tokens'] == 5_057_280 and len(val) == int(5_057_280 * 0.05)
    text = get_tokenizer('byte').decode(np.concatenate([train, val]))
    assert 'To be, or not to be' in text and text.startswith("ALL'S WELL THAT ENDS WELL")
    assert text.count('by William Shakespeare') >= 30
    meta = prepare('shakespeare', 'gpt2', out_dir=tmp_path / 'gpt2')   # offline GPT-2 BPE, ~0.5 s
    train, _ = read_bins(meta)
    assert meta['train_tokens'] + meta['val_tokens'] == 1_566_041 and 50256 not in train
    assert get_tokenizer('gpt2').decode(train[:100]).startswith("ALL'S WELL THAT ENDS WELL")
