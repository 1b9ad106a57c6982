"""
Tests for the streaming data path (nanodllm/corpus.py and data.prepare): streamed ids equal the in-memory ids, memory
stays bounded, caches are keyed by content and never rewritten, concurrent prepares agree, an interrupted prepare
resumes, every bad input is one ValueError line, and `python -m nanodllm.data` checks its flags. CPU, no network.

    python -m pytest -q tests/test_prepare.py
"""
import gzip, importlib.machinery, importlib.util, json, os, random, re, subprocess, sys, textwrap, time, types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from nanodllm import corpus as corpus_module, data
from nanodllm.data import get_tokenizer, main, prepare

ROOT = str(Path(__file__).resolve().parents[1])
WORDS = ['the', ' king', ' Ünïcödé', ' 🙂', '\n', '\n\n', '  ', '\t', "'s", ' 42', '!', ' <|endoftext|>', '\r\n', ' é']

def words(rng, n):
    return ''.join(rng.choice(WORDS) for _ in range(n))

def read_bins(meta):
    return [np.fromfile(f"{meta['out_dir']}/{s}.bin", dtype=meta['dtype']) for s in ('train', 'val')]

def reference(docs, name, val_fraction):
    """The in-memory tokenization, written independently of data.py: non-empty documents in corpus order; document
    i is val when floor((i+1) f) > floor(i f); sep between the documents of a split; no val document: the last f
    of all tokens."""
    tok, f = get_tokenizer(name), Fraction(val_fraction).limit_denominator(10**6)
    docs = [d for d in docs if d]
    is_val = [(i + 1) * f // 1 > i * f // 1 for i in range(len(docs))]
    def join(ds):
        out = []
        for d in ds:
            out += (tok.sep if out else []) + tok.encode(d)
        return np.array(out, dtype=np.int64)
    if val_fraction and not any(is_val):
        ids = join(docs)
        n_val = int(len(ids) * val_fraction)
        return ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    return join([d for d, v in zip(docs, is_val) if not v]), join([d for d, v in zip(docs, is_val) if v])

def write_jsonl(path, records, compress=False):
    lines = ''.join(json.dumps(r) + '\n' if isinstance(r, dict) else r for r in records).encode()
    path.write_bytes(gzip.compress(lines) if compress else lines)

@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of ~300 characters and shards of 3 chunks: a small corpus crosses many of both."""
    monkeypatch.setattr(data, 'CHUNK_CHARS', 300)
    monkeypatch.setattr(data, 'SHARD_CHUNKS', 3)

def mixed_corpus(folder, seed=0):
    """A folder of .txt, .jsonl and .jsonl.gz files -> the documents in corpus (path) order."""
    rng = random.Random(seed)
    (folder / 'sub').mkdir(parents=True)
    big = words(rng, 3000)                                  # ~7 KB: many pieces at 300 characters
    (folder / 'a.txt').write_text(big, encoding='utf-8')
    b = [{'text': words(rng, rng.randrange(0, 80)), 'id': k} for k in range(40)] + [{'text': ''}]
    write_jsonl(folder / 'b.jsonl', b[:20] + ['\n', '  \n'] + b[20:])   # blank lines are skipped
    c = [{'text': words(rng, rng.randrange(1, 400))} for _ in range(15)]
    write_jsonl(folder / 'c.jsonl.gz', c, compress=True)
    (folder / 'sub' / 'd.txt').write_text(words(rng, 50), encoding='utf-8')
    (folder / 'sub' / 'e.md').write_text('ignored')
    return [big] + [r['text'] for r in b] + [r['text'] for r in c] + [(folder / 'sub' / 'd.txt').read_bytes().decode()]

# -----------------------------------------------------------------------------
# streamed == in memory

@pytest.mark.parametrize('name, workers', [('byte', 0), ('gpt2', 0), ('gpt2', 2)])
@pytest.mark.parametrize('val_fraction', [0.25, 0.05, 0.0])
def test_streaming_equals_in_memory(tmp_path, small_chunks, name, workers, val_fraction):
    docs = mixed_corpus(tmp_path / 'corpus')
    meta = prepare(str(tmp_path / 'corpus'), name, tmp_path / 'out', val_fraction, workers=workers)
    train, val = read_bins(meta)
    ref_train, ref_val = reference(docs, name, val_fraction)
    assert np.array_equal(train, ref_train) and np.array_equal(val, ref_val)
    n_docs = sum(1 for d in docs if d)
    assert (meta['n_documents'], meta['val_documents']) == (n_docs, int(n_docs * Fraction(str(val_fraction))))
    assert meta['val_split'] == ('documents' if val_fraction >= 0.05 else 'last tokens')

@pytest.mark.parametrize('name', ['byte', 'gpt2'])
def test_few_documents_take_the_last_tokens(tmp_path, small_chunks, name):
    """Fewer than 1/f documents: no document is val; val is the last f of the tokens (as Shakespeare's split)."""
    docs = [words(random.Random(k), 500) for k in range(3)]
    for k, d in enumerate(docs):
        (tmp_path / f'{k}.txt').write_text(d, encoding='utf-8')
    meta = prepare(str(tmp_path), name, tmp_path / 'out', 0.2, workers=1)
    train, val = read_bins(meta)
    ref_train, ref_val = reference(docs, name, 0.2)
    assert len(val) > 0 and np.array_equal(train, ref_train) and np.array_equal(val, ref_val)
    assert meta['val_split'] == 'last tokens'

def test_hugging_face_datasets(tmp_path, monkeypatch, small_chunks):
    """hf:NAME:CONFIG goes through datasets.load_dataset(NAME, CONFIG, split='train', streaming=True); a fake module
    stands in for the optional package (no network in tests)."""
    rows = [{'text': words(random.Random(k), 60), 'n': k} for k in range(30)]
    calls = []
    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        if name == 'broken/set':
            raise ConnectionError('no route to host\nsecond line')
        return iter(rows)
    fake = types.ModuleType('datasets')
    fake.__spec__, fake.load_dataset = importlib.machinery.ModuleSpec('datasets', None), load_dataset
    monkeypatch.setitem(sys.modules, 'datasets', fake)
    monkeypatch.chdir(tmp_path)
    meta = prepare('hf:someone/stories:en', 'gpt2', val_fraction=0.1, workers=0)
    assert calls == [('someone/stories', 'en', 'train', True)]
    assert meta['out_dir'].startswith('data/stories-en_gpt2_') and meta['n_documents'] == 30
    assert all(np.array_equal(a, b) for a, b in zip(read_bins(meta), reference([r['text'] for r in rows], 'gpt2', 0.1)))
    assert prepare('hf:someone/stories:en', 'gpt2', val_fraction=0.1) == meta and len(calls) == 1   # cached
    with pytest.raises(ValueError, match=r"^cannot stream hf:broken/set \(ConnectionError: no route to host\): "):
        prepare('hf:broken/set', 'gpt2')
    monkeypatch.setitem(sys.modules, 'datasets', None)  # not installed
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None)
    with pytest.raises(ValueError, match=r"needs the `datasets` package: pip install -e '.\[hf\]'"):
        prepare('hf:someone/other')

# -----------------------------------------------------------------------------
# memory

MEMORY_SCRIPT = textwrap.dedent('''
    import json, os, resource, sys
    from nanodllm import data
    data.CHUNK_CHARS = 1 << 15                      # 32 KB chunks: the corpus is ~1000x bigger
    name, workers, out = sys.argv[1], int(sys.argv[2]), sys.argv[4]
    data.get_tokenizer(name)                        # load the BPE ranks before the baseline
    peak = lambda who: resource.getrusage(who).ru_maxrss / 1024     # MB (Linux: ru_maxrss is in KB)
    before = peak(resource.RUSAGE_SELF)
    meta = data.prepare(sys.argv[3], name, out, val_fraction=0.01, workers=workers)
    print(json.dumps(dict(before=before, self=peak(resource.RUSAGE_SELF), children=peak(resource.RUSAGE_CHILDREN),
                          tokens=meta['train_tokens'] + meta['val_tokens'])))
''')

@pytest.mark.slow
@pytest.mark.parametrize('name, workers, megabytes', [('byte', 0, 48), ('gpt2', 2, 6)])
def test_memory_stays_bounded(tmp_path, name, workers, megabytes):
    """Peak RSS grows by far less than the corpus. Holding the corpus would fail: byte, 48 MB of text is 48 MB as
    a str, 96 MB as uint16 ids, 384 MB as int64 (the old prepare held all three); gpt2, 6 MB of text held as
    Python lists of ids (as the old encode_ordinary_batch did) is ~70 MB."""
    rng = random.Random(0)
    block = words(rng, 100_000)
    folder = tmp_path / 'corpus'
    folder.mkdir()
    n = megabytes * 2**20 // len(block.encode())
    with open(folder / 'big.txt', 'w', encoding='utf-8') as f:   # one big document, read in pieces
        for _ in range(n // 2):
            f.write(block)
    write_jsonl(folder / 'many.jsonl', ({'text': block[k:k + 2000]} for _ in range(n - n // 2)
                                        for k in range(0, len(block), 2000)))
    out = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, name, str(workers), str(folder), str(tmp_path / 'o')],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    corpus_mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    assert corpus_mb > 0.9 * megabytes and r['tokens'] > 0
    assert r['self'] - r['before'] < 25, r        # MB over the baseline, in the main process
    if workers:  # forked workers start as a copy of the parent: they too may not grow with the corpus
        assert r['children'] - r['before'] < 25, r

# -----------------------------------------------------------------------------
# caches: keyed by content, never rewritten, safe under concurrency, resumable

def stats(folder):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path(folder).iterdir()}

def test_same_file_name_different_corpora_get_separate_caches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for who in ('alice', 'bob'):
        (tmp_path / who).mkdir()
        (tmp_path / who / 'input.txt').write_text(f'{who} wrote this corpus. ' * 200)
    a = prepare(str(tmp_path / 'alice' / 'input.txt'), 'byte')
    a_files = stats(a['out_dir'])
    b = prepare(str(tmp_path / 'bob' / 'input.txt'), 'byte')
    assert a['out_dir'] != b['out_dir'] and a['out_dir'].startswith('data/input_byte_')
    assert get_tokenizer('byte').decode(np.concatenate(read_bins(a))).startswith('alice wrote')
    assert get_tokenizer('byte').decode(np.concatenate(read_bins(b))).startswith('bob wrote')
    assert stats(a['out_dir']) == a_files                                       # alice's cache untouched
    assert prepare(str(tmp_path / 'alice' / 'input.txt'), 'byte') == a             # and still found
    assert prepare(str(tmp_path / 'alice' / 'input.txt'), 'byte', val_fraction=0.1)['out_dir'] != a['out_dir']

def test_cache_is_reused_never_rewritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / 'corpus.txt'
    src.write_text('some text to tokenize\n' * 500)
    meta = prepare(str(src), 'gpt2', workers=0)
    before = stats(meta['out_dir'])
    assert prepare(str(src), 'gpt2', workers=0) == meta and stats(meta['out_dir']) == before
    os.utime(src, ns=(1, 1))                   # new times, same bytes: found again through the content hash
    assert prepare(str(src), 'gpt2', workers=0) == meta and stats(meta['out_dir']) == before
    src.write_text('other text\n' * 500)       # new bytes: a new cache; the old one stays as it was
    assert prepare(str(src), 'gpt2', workers=0)['out_dir'] != meta['out_dir']
    assert stats(meta['out_dir']) == before
    assert sorted(p.name for p in (tmp_path / 'data').iterdir() if p.suffix not in ('.lock',)) == sorted(
        [Path(meta['out_dir']).name, Path(prepare(str(src), 'gpt2')['out_dir']).name])   # no .partial left

def test_damaged_cache_is_an_error(tmp_path):
    (tmp_path / 'x.txt').write_text('abc ' * 100)
    meta = prepare(str(tmp_path / 'x.txt'), 'byte', tmp_path / 'out')
    with open(tmp_path / 'out' / 'train.bin', 'ab') as f:
        f.write(b'\0\0')
    with pytest.raises(ValueError, match=r'train.bin is damaged .*: delete .* and prepare again'):
        prepare(str(tmp_path / 'x.txt'), 'byte', tmp_path / 'out')
    assert meta['train_tokens'] == 380

CONCURRENT_SCRIPT = ('import sys, json; from nanodllm import data; out = sys.argv[3] if len(sys.argv) > 3 else None; '
                     'print(json.dumps(data.prepare(sys.argv[1], sys.argv[2], out, workers=1)))')

@pytest.mark.slow
def test_concurrent_prepares_agree(tmp_path):
    """Two processes prepare one corpus at once: one tokenizes, the other waits for the lock and then reads the
    same cache. First while this test holds the lock until both wait (so they surely contend), then free-running."""
    rng = random.Random(1)
    (tmp_path / 'corpus').mkdir()
    for k in range(4):
        (tmp_path / 'corpus' / f'{k}.txt').write_text(words(rng, 40_000), encoding='utf-8')
    def start(*extra):
        procs = []
        for k in range(2):
            err = open(tmp_path / f'err{len(list(tmp_path.glob("err*")))}', 'w+')
            procs.append((subprocess.Popen([sys.executable, '-c', CONCURRENT_SCRIPT, str(tmp_path / 'corpus'), 'gpt2',
                                            *extra], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT),
                                           stdout=subprocess.PIPE, stderr=err, text=True), err))
        return procs
    def finish(procs):
        outs = [p.communicate(timeout=300)[0] for p, _ in procs]
        errs = [Path(err.name).read_text() for _, err in procs]
        assert all(p.returncode == 0 for p, _ in procs), errs
        return [json.loads(out) for out in outs], errs
    held = tmp_path / 'held'
    with data._lock(held):
        procs = start(str(held))
        deadline = time.time() + 240
        while not all('waiting for another process' in Path(err.name).read_text() for _, err in procs):
            assert time.time() < deadline and all(p.poll() is None for p, _ in procs), 'they never waited'
            time.sleep(0.1)
    metas, errs = finish(procs)
    assert metas[0] == metas[1] and metas[0]['out_dir'] == str(held)
    metas, errs = finish(start())
    assert metas[0] == metas[1]
    cache = tmp_path / metas[0]['out_dir']
    assert [p for p in (tmp_path / 'data').iterdir() if p.suffix != '.lock'] == [cache]   # no .partial left
    assert all(np.array_equal(a, b) for a, b in zip(read_bins({**metas[0], 'out_dir': cache}),
                                                    read_bins({**metas[0], 'out_dir': held})))

def test_interrupted_prepare_resumes_from_the_last_shard(tmp_path, small_chunks, monkeypatch, capsys):
    docs = mixed_corpus(tmp_path / 'corpus')
    calls, encode, stop_at = [], data.Tokenizer.encode_array, [None]
    def counted(self, text):  # counts the pieces tokenized; raises Ctrl-C at call stop_at
        calls.append(text)
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt
        return encode(self, text)
    monkeypatch.setattr(data.Tokenizer, 'encode_array', counted)
    prepare(str(tmp_path / 'corpus'), 'gpt2', tmp_path / 'ref', 0.25, workers=0)
    total, stop_at[0] = len(calls), len(calls) * 2 // 3
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        prepare(str(tmp_path / 'corpus'), 'gpt2', tmp_path / 'out', 0.25, workers=0)
    progress = json.loads((tmp_path / 'out.partial' / 'progress.json').read_text())
    assert progress['chunks'] > 0 and progress['chunks'] % 3 == 0 and not (tmp_path / 'out').exists()
    calls.clear()
    meta = prepare(str(tmp_path / 'corpus'), 'gpt2', tmp_path / 'out', 0.25, workers=0)
    assert 'resuming' in capsys.readouterr().err
    assert total - stop_at[0] < len(calls) < total / 2      # the committed shards were not tokenized again
    train, val = read_bins(meta)
    ref_train, ref_val = reference(docs, 'gpt2', 0.25)
    assert np.array_equal(train, ref_train) and np.array_equal(val, ref_val)
    assert not (tmp_path / 'out.partial').exists()

def test_input_error_midway_leaves_no_partial(tmp_path, small_chunks):
    write_jsonl(tmp_path / 'x.jsonl', [{'text': words(random.Random(k), 200)} for k in range(30)] + ['{oops\n'])
    with pytest.raises(ValueError, match=r'x.jsonl:31 is not JSON'):
        prepare(str(tmp_path / 'x.jsonl'), 'byte', tmp_path / 'out')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.lock', 'x.jsonl']

def test_corpus_changed_while_tokenized(tmp_path, monkeypatch):
    (tmp_path / 'x.txt').write_text('abc ' * 100)
    signatures = iter(['before', 'after'])  # at the start and at the end
    monkeypatch.setattr(corpus_module.Corpus, 'signature', lambda self: next(signatures))
    with pytest.raises(ValueError, match='changed while it was tokenized: prepare again once it is final'):
        prepare(str(tmp_path / 'x.txt'), 'byte', tmp_path / 'out')
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'out.partial').exists()

# -----------------------------------------------------------------------------
# bad inputs: one ValueError line that names the fix

def fifo(tmp_path):
    os.mkfifo(tmp_path / 'pipe')
    return tmp_path / 'pipe'

def folder_with(tmp_path, name, make):
    (tmp_path / 'f').mkdir()
    make(tmp_path / 'f' / name)
    (tmp_path / 'f' / 'ok.txt').write_text('fine')
    return tmp_path / 'f'

def file_with(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path

BAD = {  # name: (make(tmp_path) -> data, extra prepare kwargs, phrase of the message)
    'missing path': (lambda t: t / 'nope.txt', {}, 'does not exist: pass'),
    'empty --data': (lambda t: '', {}, 'is empty: pass'),
    'empty file': (lambda t: file_with(t, 'e.txt', ''), {}, 'no text in .*: it is empty'),
    'empty folder': (lambda t: (t / 'f').mkdir() or t / 'f', {}, r'no .txt, .jsonl or .jsonl.gz files in'),
    'folder without text files': (lambda t: (t / 'f').mkdir() or (t / 'f' / 'a.md').write_text('x') and t / 'f', {},
                                  'no .txt, .jsonl or .jsonl.gz files'),
    'folder of empty files': (lambda t: (t / 'f').mkdir() or (t / 'f' / 'a.txt').write_text('') or t / 'f', {},
                              'no text in'),
    'only empty jsonl texts': (lambda t: file_with(t, 'e.jsonl', '{"text": ""}\n\n'), {}, 'every document is empty'),
    'latin-1 text': (lambda t: file_with(t, 'l.txt', 'caf\xe9'.encode('latin-1')), {}, 'not UTF-8 .*convert it'),
    'binary with NUL': (lambda t: file_with(t, 'b.txt', b'\x7fELF\x02\x01\x01\x00\x00\x00'), {}, 'looks binary'),
    'random bytes': (lambda t: file_with(t, 'r.bin', bytes(random.Random(0).randrange(256) for _ in range(999))),
                     {}, 'is not UTF-8'),
    '/dev/zero': (lambda t: '/dev/zero', {}, 'not a regular file or a folder'),
    'a FIFO': (fifo, {}, 'not a regular file or a folder'),
    'a FIFO in a folder': (lambda t: folder_with(t, 'p.txt', os.mkfifo), {}, r'p.txt is not a regular file .*remove'),
    'a broken link in a folder': (lambda t: folder_with(t, 'l.txt', lambda p: p.symlink_to(t / 'gone')), {},
                                  'cannot read .*l.txt'),
    'jsonl: not JSON': (lambda t: file_with(t, 'x.jsonl', '{"text": "a"}\n{"text": \n'), {},
                        r'x.jsonl:2 is not JSON .*one JSON object per line'),
    'jsonl: not an object': (lambda t: file_with(t, 'x.jsonl', '["text"]\n'), {}, 'x.jsonl:1 is a JSON list'),
    'jsonl: no text field': (lambda t: file_with(t, 'x.jsonl', '{"content": "a", "id": 1}\n'), {},
                             r"no 'text' field \(it has 'content', 'id'\): pass the right --text-field"),
    'jsonl: other field missing': (lambda t: file_with(t, 'x.jsonl', '{"text": "a"}\n'), {'text_field': 'body'},
                                   "no 'body' field"),
    'jsonl: text not a string': (lambda t: file_with(t, 'x.jsonl', '{"text": 3}\n'), {}, "'text' is a JSON int"),
    'jsonl: not UTF-8': (lambda t: file_with(t, 'x.jsonl', b'{"text": "caf\xe9"}\n'), {}, 'x.jsonl:1 is not JSON'),
    'jsonl.gz: not gzip': (lambda t: file_with(t, 'x.jsonl.gz', '{"text": "a"}\n'), {}, 'cannot read .*x.jsonl.gz'),
    'jsonl.gz: truncated': (lambda t: file_with(t, 'x.jsonl.gz', gzip.compress(b'{"text": "abc"}\n' * 99)[:-20]), {},
                            'cannot read .*x.jsonl.gz'),
    'unknown tokenizer': (lambda t: file_with(t, 'x.txt', 'a'), {'tokenizer': 'bpe'}, r"use one of \('byte', 'gpt2'"),
    'val_fraction 1': (lambda t: file_with(t, 'x.txt', 'a'), {'val_fraction': 1.0}, r'must be a number in \[0, 1\)'),
    'val_fraction nan': (lambda t: file_with(t, 'x.txt', 'a'), {'val_fraction': float('nan')}, r'in \[0, 1\)'),
    'workers -1': (lambda t: file_with(t, 'x.txt', 'a'), {'workers': -1}, 'integer >= 0'),
    'empty text_field': (lambda t: file_with(t, 'x.txt', 'a'), {'text_field': ''}, 'non-empty field name'),
    'hf: without a name': (lambda t: 'hf:', {}, 'names no dataset: pass hf:NAME'),
    'out_dir holds other tokens': (lambda t: file_with(t, 'x.txt', 'a') if prepare(
        str(file_with(t, 'y.txt', 'b')), out_dir=t / 'out') else None, {}, 'pass another --out-dir, or delete it'),
    'out_dir is a file': (lambda t: file_with(t, 'out', 'a') and file_with(t, 'x.txt', 'a'), {},
                          'pass another --out-dir, or delete it'),
}

@pytest.mark.parametrize('case', BAD)
def test_bad_input_is_one_line(tmp_path, case):
    make, kwargs, phrase = BAD[case]
    src = make(tmp_path)
    with pytest.raises(ValueError) as e:
        prepare(str(src), **{'out_dir': tmp_path / 'out', **kwargs})
    message = str(e.value)
    assert '\n' not in message and len(message) < 400, message
    assert re.search(phrase, message), message
    assert not list(tmp_path.glob('*.partial'))

# -----------------------------------------------------------------------------
# python -m nanodllm.data

@pytest.mark.parametrize('argv, phrase', [
    (['--workers', '-1'], "argument --workers: '-1' is not an integer in [0, inf)"),
    (['--workers', 'abc'], "argument --workers: 'abc' is not an integer"),
    (['--workers', '1.5'], "'1.5' is not an integer"),
    (['--val-fraction', '1'], "argument --val-fraction: '1' is not a number in [0, 1)"),
    (['--val-fraction', 'nan'], "'nan' is not a number in [0, 1)"),
    (['--val-fraction', '5%'], "'5%' is not a number"),
    (['--tokenizer', 'bpe'], "argument --tokenizer: invalid choice: 'bpe'"),
    (['--frobnicate'], 'unrecognized arguments: --frobnicate'),
    (['--data'], 'argument --data: expected one argument'),
    (['--data', '/dev/zero'], '/dev/zero is not a regular file or a folder'),
    (['--data', '/no/such/corpus'], '/no/such/corpus does not exist'),
])
def test_cli_bad_flags(argv, phrase, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(argv + ['--out-dir', str(tmp_path / 'out')] if argv[0] == '--data' and len(argv) > 1 else argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1 and phrase in err, err

@pytest.mark.slow
@pytest.mark.parametrize('argv', [['--workers', '-1'], ['--data', '/dev/zero']])
def test_cli_bad_flags_subprocess(argv, tmp_path):
    out = subprocess.run([sys.executable, '-m', 'nanodllm.data', *argv], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode == 2 and out.stderr.startswith('error: ') and out.stderr.count('\n') == 1, out.stderr
    assert 'Traceback' not in out.stderr + out.stdout

def test_cli_prepares(tmp_path, capsys):
    write_jsonl(tmp_path / 'x.jsonl', [{'body': 'abc ' * 25} for _ in range(4)])
    main(['--data', str(tmp_path / 'x.jsonl'), '--text-field', 'body', '--out-dir', str(tmp_path / 'out'),
          '--val-fraction', '0.25', '--workers', '0'])
    assert '304 train + 100 val tokens from 4 documents'  # 3 x 100 + 2 separators of 2 bytes in capsys.readouterr().out

def test_cli_disk_full_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / 'x.txt').write_text('abc ' * 100)
    def full(*args):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(data, '_commit', full)
    with pytest.raises(SystemExit) as e:
        main(['--data', str(tmp_path / 'x.txt'), '--out-dir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count('\n') == 1 and 'No space left on device' in err and 'resume' in err, err
