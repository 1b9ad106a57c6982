"""
Corpus -> documents: what `nanodllm.data.prepare` reads. Owns finding, checking, fingerprinting and streaming it.

A corpus is one of
- 'shakespeare': the bundled 42 works (nanodllm/assets/shakespeare.txt.xz, see ASSETS.md), one document;
- a file: `.jsonl` / `.jsonl.gz` (one document per line: a JSON object whose `text` field, name configurable, is
  the text) or any other name, read as plain UTF-8 text (one document);
- a folder: its `*.txt`, `*.jsonl` and `*.jsonl.gz` files, recursively, in path order (a .txt file = one document);
- 'hf:NAME[:CONFIG]': the train split of a Hugging Face dataset, streamed through the optional `datasets` package
  (pip install -e ".[hf]"), one document per row.
Corpus.parts() streams the corpus as work items of about `size` characters, read in blocks: memory does not depend
on the corpus size (only one .jsonl line or dataset row is held whole). Corpus.tokenized() sends them, in chunks, to a
pool of tokenizer processes, which also parse the JSON (the main process only cuts files into blocks). Empty
documents are skipped. Every problem with the input raises ValueError with one line that names the fix.
"""
import codecs, collections, gzip, hashlib, importlib.util, itertools, json, lzma, multiprocessing, os, re, signal
import stat, zlib
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).parent / 'assets'
KINDS = ('.txt', '.jsonl', '.jsonl.gz')  # what a folder contributes; a single file of another name is read as .txt
USAGE = "pass 'shakespeare', a .txt / .jsonl / .jsonl.gz file, a folder of them, or hf:NAME[:CONFIG]"

# GPT-2's pre-tokenizer never joins a non-space character to the ASCII whitespace after it, so a text cut there
# tokenizes to the same ids as the whole (checked in tests/test_data.py). Python's \S is stricter than the Unicode
# White_Space that tiktoken uses (it also excludes \x1c-\x1f), so such a cut is safe for tiktoken too.
_CUT = re.compile(r'\S(?=[\t\n\r ])')

def _cut(text, size=1 << 20):
    """Split text into pieces of about `size` chars, cut only after a non-space that ASCII whitespace follows:
    no GPT-2 pre-token spans such a boundary, so the ids of the pieces, concatenated, equal the ids of the text."""
    cuts = [0]
    while (m := _CUT.search(text, cuts[-1] + size)) is not None:
        cuts.append(m.end())
    return [text[a:b] for a, b in zip(cuts, cuts[1:] + [len(text)])]

def _open(path):
    """Binary file object; .xz and .gz are decompressed as they are read."""
    name = str(path)
    return lzma.open(path) if name.endswith('.xz') else gzip.open(path) if name.endswith('.gz') else open(path, 'rb')

def _kind(path):
    return next((k for k in ('.jsonl.gz', '.jsonl') if path.name.endswith(k)), '.txt')

def _unreadable(path, e):
    reason = getattr(e, 'strerror', None) or str(e) or type(e).__name__
    return ValueError(f"cannot read {path} ({reason}): make it a readable, uncorrupted file or remove it")

class Corpus:
    """source (for people), name (for folder names), files: [(Path, kind)] in corpus order, hf: (name, config)."""
    def __init__(self, data, text_field='text'):
        if not isinstance(text_field, str) or not text_field:
            raise ValueError(f"text_field={text_field!r} must be a non-empty field name, e.g. 'text'")
        if not isinstance(data, (str, os.PathLike)) or not str(data).strip():
            raise ValueError(f"--data {data!r} is empty: {USAGE}")
        self.text_field, self.hf, data = text_field, None, str(data)
        if data == 'shakespeare':
            self.files, self.name = [(ASSETS / 'shakespeare.txt.xz', '.txt')], 'shakespeare'
            self.source = 'shakespeare (nanodllm/assets/shakespeare.txt.xz)'
        elif data.startswith('hf:'):
            name, _, config = data[3:].partition(':')
            if not name:
                raise ValueError(f"--data {data!r} names no dataset: pass hf:NAME or hf:NAME:CONFIG")
            if importlib.util.find_spec('datasets') is None:
                raise ValueError(f"--data {data} needs the `datasets` package: pip install -e '.[hf]' (or datasets)")
            self.files, self.hf, self.source = [], (name, config or None), data
            self.name = name.split('/')[-1] + (f'-{config}' if config else '')
        else:
            path = Path(data).expanduser().resolve()
            self.files, self.source = _list_files(path), str(path)
            self.name = path.name.removesuffix(_kind(path)) if path.is_file() else path.name
        self.name = re.sub(r'[^A-Za-z0-9._-]+', '-', self.name).strip('.-')[:48] or 'corpus'

    def fingerprint(self):
        """sha256 of what the corpus holds: every file's kind and bytes in corpus order (read at disk speed)."""
        h = hashlib.sha256(json.dumps([self.source, self.text_field]).encode() if self.hf else b'')
        for path, kind in self.files:
            f_hash = hashlib.sha256()
            try:
                with open(path, 'rb') as f:
                    while block := f.read(1 << 22):
                        f_hash.update(block)
            except OSError as e:
                raise _unreadable(path, e) from None
            h.update(f'{kind} {f_hash.hexdigest()}\n'.encode())
        return h.hexdigest()

    def signature(self):
        """sha256 of every file's path, size, inode and times: equal signatures mean unchanged files, without
        reading them (ctime changes on every write and cannot be set back)."""
        stats = []
        for path, _ in self.files:
            try:
                s = os.stat(path)
            except OSError as e:
                raise _unreadable(path, e) from None
            stats.append([str(path), s.st_size, s.st_ino, s.st_mtime_ns, s.st_ctime_ns])
        return hashlib.sha256(json.dumps([self.source, stats]).encode()).hexdigest()

    def parts(self, size=1 << 20):
        """Yield the corpus in order as work items of about `size` characters (or bytes), one of
        ('text', new_doc, text): a piece of a document, new_doc True on its first piece, or
        ('jsonl', path, first line number, bytes): whole lines of a .jsonl(.gz) file, parsed by _jsonl_texts."""
        if self.hf:
            yield from _hf_parts(*self.hf, self.text_field, size)
        for path, kind in self.files:
            yield from _text_parts(path, size) if kind == '.txt' else _jsonl_blocks(path, size)

    def tokenized(self, tok, workers=None, size=1 << 20, skip=0):
        """Yield (new_doc flags, token ids) of each document piece, one chunk of parts of about `size` characters
        at a time, in corpus order, after the first `skip` chunks (read again, not tokenized). A pool of `workers`
        processes tokenizes (default: all cores for gpt2, none for the byte tokenizer, a memory copy; 0: this
        process), with at most 2 chunks per worker in flight: memory does not grow with the corpus."""
        global _tok
        _tok = tok  # set before the pool forks: workers inherit it
        chunks = itertools.islice(_chunks(self.parts(size), size), skip, None)
        if workers is None and tok.name != 'byte':
            workers = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
        if not workers or 'fork' not in multiprocessing.get_all_start_methods():
            for chunk in chunks:
                yield _split(*_tokenize_chunk(chunk, self.text_field))
            return
        # fork: workers start at once with the tokenizer loaded, and train.py (no __main__ guard) is not re-run
        with multiprocessing.get_context('fork').Pool(workers, _ignore_sigint) as pool:
            in_flight = collections.deque()
            for chunk in chunks:
                in_flight.append(pool.apply_async(_tokenize_chunk, (chunk, self.text_field)))
                if len(in_flight) >= 2 * workers:  # wait for the oldest: keeps the order and bounds the memory
                    yield _split(*in_flight.popleft().get())
            while in_flight:
                yield _split(*in_flight.popleft().get())

def _chunks(parts, size):
    """Group parts into lists of about `size` characters or bytes: one task for a worker."""
    chunk, n = [], 0
    for part in parts:
        chunk.append(part)
        n += len(part[-1])
        if n >= size:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk

_tok = None  # the tokenizer (a nanodllm.data.Tokenizer) of Corpus.tokenized and of its worker processes

def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no traceback per worker

def _tokenize_chunk(chunk, text_field):
    """Runs in a worker: parts -> (new_doc flag of each text, all ids concatenated, the number of ids of each text);
    one array pickles fast."""
    flags, ids = [], []
    for part in chunk:
        texts = [part[1:]] if part[0] == 'text' else [(True, t) for t in _jsonl_texts(*part[1:], text_field)]
        for new_doc, text in texts:
            flags.append(new_doc)
            ids.append(_tok.encode_array(text))
    return flags, np.concatenate(ids) if ids else np.zeros(0, _tok.dtype), np.array([len(x) for x in ids])

def _split(flags, ids, lengths):
    return flags, np.split(ids, np.cumsum(lengths)[:-1])

def _list_files(path):
    """[(file, kind)] of a file or a folder, checked: exists, regular files only, at least one non-empty."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: {USAGE}") from None
    except OSError as e:
        raise _unreadable(path, e) from None
    if stat.S_ISREG(mode):
        files = [path]
    elif stat.S_ISDIR(mode):
        files = []
        def fail(e):
            raise _unreadable(e.filename, e)
        for root, dirs, names in os.walk(path, onerror=fail):  # symlinked folders are not followed (no loops)
            files += [Path(root, n) for n in names if n.endswith(KINDS)]
        files.sort(key=lambda f: f.relative_to(path).parts)
        if not files:
            raise ValueError(f"no .txt, .jsonl or .jsonl.gz files in {path}: put the text in such files, or "
                             f"pass one file")
    else:
        raise ValueError(f"{path} is not a regular file or a folder (a device, FIFO or socket): {USAGE}")
    sizes = []
    for f in files:
        try:
            s = os.stat(f)
        except OSError as e:  # e.g. a broken link
            raise _unreadable(f, e) from None
        if not stat.S_ISREG(s.st_mode):
            raise ValueError(f"{f} is not a regular file (a device, FIFO or socket): remove it from {path}")
        sizes.append(s.st_size)
    if not any(sizes):
        raise ValueError(f"no text in {path}: it is empty; pass a non-empty text file or folder")
    return [(f, _kind(f)) for f in files]

def _text_parts(path, size):
    """A text file as one document, decoded as it is read, in pieces cut by _cut."""
    decoder, text, offset, new_doc = codecs.getincrementaldecoder('utf-8')(), '', 0, True
    try:
        with _open(path) as f:
            while True:
                block = f.read(size)
                try:
                    new = decoder.decode(block, final=not block)
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path} is not UTF-8 (byte {offset + e.start}: {e.reason}): convert it to "
                                     f"UTF-8 (e.g. iconv -t utf-8), or remove it from the corpus") from None
                if '\0' in new:
                    raise ValueError(f"{path} looks binary (it holds NUL bytes): pass text files only")
                offset, text = offset + len(block), text + new
                pieces = _cut(text, size) if block else [text]
                if len(pieces[-1]) > 8 * size:  # no whitespace for 8 pieces: cut anyway (ids may differ here)
                    pieces[-1:] = [pieces[-1][:size], pieces[-1][size:]]
                *done, text = pieces if block else pieces + ['']  # the last piece may still grow
                for piece in done:
                    if piece:
                        yield 'text', new_doc, piece
                        new_doc = False
                if not block:
                    return
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise _unreadable(path, e) from None

def _jsonl_blocks(path, size):
    """A .jsonl(.gz) file as ('jsonl', path, first line number, whole lines) parts of about `size` bytes."""
    buf, line = bytearray(), 1
    try:
        with _open(path) as f:
            while block := f.read(size):
                buf += block
                end = buf.rfind(b'\n', len(buf) - len(block)) + 1  # after the last newline, if the block has one
                if end:
                    lines = bytes(buf[:end])
                    del buf[:end]
                    yield 'jsonl', str(path), line, lines
                    line += lines.count(b'\n')
    except (OSError, EOFError, zlib.error) as e:
        raise _unreadable(path, e) from None
    if buf.strip():
        yield 'jsonl', str(path), line, bytes(buf)

def _jsonl_texts(path, line, lines, field):
    """Runs in a worker: whole lines of a .jsonl file, the first being line number `line` -> the non-empty texts
    of their records (blank lines are skipped)."""
    for n, raw in enumerate(lines.split(b'\n'), line):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as e:  # also non-UTF-8 bytes
            raise ValueError(f"{path}:{n} is not JSON ({getattr(e, 'msg', None) or getattr(e, 'reason', None) or e}): "
                             f"write one JSON object per line (or name the file .txt to read it as text)") from None
        if text := _record_text(record, field, f'{path}:{n}'):
            yield text

def _record_text(record, field, where):
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a JSON {type(record).__name__}, not an object: write one JSON object per "
                         f"line, with a '{field}' field")
    if field not in record:
        raise ValueError(f"{where} has no '{field}' field (it has {', '.join(map(repr, list(record)[:8]))}): "
                         f"pass the right --text-field")
    if not isinstance(record[field], str):
        raise ValueError(f"{where}: '{field}' is a JSON {type(record[field]).__name__}, not a string: pass the "
                         f"right --text-field")
    return record[field]

def _hf_parts(name, config, field, size):
    """One document per row of the train split of a Hugging Face dataset, streamed (nothing downloaded whole)."""
    for n, row in enumerate(hf_rows(name, config)):
        text = _record_text(row, field, f'hf:{name} row {n}')
        for k, piece in enumerate(_cut(text, size) if text else []):
            yield 'text', k == 0, piece


def hf_rows(name, config, split='train'):
    """The rows (dicts) of a split of a Hugging Face dataset, streamed; the hub, the network or a missing config is
    one ValueError line. Also read by nanodllm/records.py (prompt/response records such as hf:openai/gsm8k:main)."""
    import datasets  # optional extra: pip install -e ".[hf]"
    def failed(e):  # the hub, the network, a missing config: one line
        first = (str(e).strip().splitlines() or [''])[0][:200]
        return ValueError(f"cannot stream hf:{name}{':' + config if config else ''} ({type(e).__name__}: {first}): "
                          f"check the name and config, the network, and HF_TOKEN for gated datasets")
    try:
        rows = iter(datasets.load_dataset(name, config, split=split, streaming=True))
    except Exception as e:
        raise failed(e) from None
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:
            raise failed(e) from None
        yield row
