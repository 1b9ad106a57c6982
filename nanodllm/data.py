"""
Data for nanodllm: tokenizers, corpus -> train.bin / val.bin, and the batch loader. The path, top to bottom:

  corpus: 'shakespeare' | a .txt / .jsonl / .jsonl.gz file | a folder of them | hf:NAME[:CONFIG]  (corpus.py)
  -> documents, read in blocks and cut into ~1 MB parts -> a pool of tokenizer processes, in order (corpus.py)
  -> ids appended to train.bin / val.bin in <cache>.partial/, committed after every shard (SHARD_CHUNKS parts)
  -> meta.json, then <cache>.partial/ renamed to <cache>/: a cache appears whole or not at all, never rewritten
  -> Loader / eval_batches: (B, T) blocks of a .bin read through np.memmap, sharded by rank.

- get_tokenizer('byte' | 'gpt2'): ids 0..n_vocab-1 are real tokens. The diffusion mask token is NOT part of
  the tokenizer: models append it as id n_vocab. decode() renders any id outside [0, n_vocab) as MASK_CHAR.
- prepare(data, tokenizer): the cache is data/<name>_<tokenizer>_<key>/ under the cwd, key = 12 hex digits of the
  sha256 of the corpus bytes and the settings, so two different input.txt files never share a cache. It holds
  train.bin / val.bin (flat uint16 ids; uint32 from 65,535 ids) and meta.json. In each split, tokenizer.sep
  separates documents. The val split is taken by documents: document i (in corpus order) is val when
  floor((i+1) f) > floor(i f), f = val_fraction: exactly floor(n f) of n documents, spread evenly (every 20th at
  f = 0.05). A corpus of fewer than 1/f documents, such as the bundled Shakespeare (one document), gets none that
  way; its val split is then the last f of its tokens, as before streaming, so Shakespeare results stay comparable.
- Loader: infinite, seeded, rank-sharded (B, T) batches of non-overlapping seq_len blocks of a .bin file.
- eval_batches: fixed, in-order, rank-sharded batches of the val split (the same on every call).
- Prompt/response records (nanodllm/records.py) are rows of seq_len tokens in the same .bin layout; with their
  prompt lengths (prompt_path) Loader and eval_batches yield (x0, given) instead of x0 (split_batch unpacks both).
Everything works offline: the corpus and GPT-2's BPE ranks ship with the package.

    python -m nanodllm.data --data shakespeare --tokenizer gpt2          # -> data/shakespeare_gpt2_<key>/
    python -m nanodllm.data --data corpus/ --tokenizer gpt2 --workers 16   # any size: memory stays bounded
"""
import argparse, base64, contextlib, fcntl, functools, glob, hashlib, json, lzma, math, os, secrets, shutil, sys, time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nanodllm.corpus import ASSETS, Corpus

TOKENIZERS = ('byte', 'gpt2')
MASK_CHAR = '\u25ae'  # '▮': how decode() shows the mask id (and any id >= n_vocab)
# GPT-2's pre-tokenization regex (tiktoken's r50k_base pat_str), written out so we need no tiktoken_ext / network
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# -----------------------------------------------------------------------------
# tokenizers

@functools.lru_cache(maxsize=None)
def _gpt2_encoding():
    import tiktoken  # imported here so that the byte tokenizer needs no tiktoken
    with lzma.open(ASSETS / 'gpt2.tiktoken.xz') as f:  # lines of 'base64(token bytes) rank'
        ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in f if line.strip())}
    return tiktoken.Encoding(name='gpt2', pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={'<|endoftext|>': 50256})

class Tokenizer:
    """name, n_vocab (real ids only), bos (first token of AR samples), sep (ids put between documents),
    eos (ends a response and pads its row: prompt/response records, nanodllm/records.py), dtype (of the .bin files:
    uint16 when n_vocab + 1, the mask id included, fits)."""
    def __init__(self, name):
        if name not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {name!r}: use one of {TOKENIZERS}")
        self.name = name
        if name == 'byte':   # ids = the UTF-8 bytes of the text
            self.enc, self.n_vocab, self.bos, self.sep = None, 256, ord('\n'), [10, 10]
            self.eos = 0     # the NUL byte: absent from text (corpus.py refuses it in .txt, records.py in records)
        else:                # GPT-2 BPE; <|endoftext|> (50256) starts samples and separates documents
            self.enc = _gpt2_encoding()
            self.n_vocab, self.bos, self.sep = self.enc.n_vocab, self.enc.eot_token, [self.enc.eot_token]
            self.eos = self.enc.eot_token  # <|endoftext|>: encode() never produces it from text
        self.dtype = np.dtype(np.uint16 if self.n_vocab + 1 < 2**16 else np.uint32)

    def encode(self, text):
        """str -> list[int]. gpt2: special-token text like '<|endoftext|>' is encoded as ordinary text."""
        return list(text.encode('utf-8')) if self.enc is None else self.enc.encode_ordinary(text)

    def encode_array(self, text):
        """str -> np.ndarray of self.dtype, the ids of encode() without a Python int per byte (for prepare).
        An unpaired surrogate (possible in JSON text) becomes '?' here and U+FFFD under gpt2."""
        if self.enc is None:
            return np.frombuffer(text.encode('utf-8', errors='replace'), dtype=np.uint8).astype(self.dtype)
        return np.array(self.enc.encode_ordinary(text), dtype=self.dtype)

    def decode(self, ids, mask_id=None):
        """list/array/tensor of ids -> str. Ids outside [0, n_vocab) (the mask token) and mask_id show as MASK_CHAR;
        invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD."""
        ids = ids.tolist() if hasattr(ids, 'tolist') else list(ids)
        holes = [k for k, i in enumerate(ids) if not 0 <= i < self.n_vocab or i == mask_id]
        out, prev = [], 0
        for k in holes + [len(ids)]:  # decode the runs of real ids between the holes
            run = ids[prev:k]
            out.append(bytes(run) if self.enc is None else self.enc.decode_bytes(run))
            out.append(MASK_CHAR.encode('utf-8') if k < len(ids) else b'')
            prev = k + 1
        return b''.join(out).decode('utf-8', errors='replace')

def get_tokenizer(name):
    """'byte' (n_vocab 256, bos '\\n') or 'gpt2' (n_vocab 50257, bos <|endoftext|>); fully offline."""
    return Tokenizer(name)

# -----------------------------------------------------------------------------
# corpus -> train.bin / val.bin / meta.json

FORMAT = 2              # version of what prepare() writes; part of the cache key, so a new version never reuses
CHUNK_CHARS = 1 << 20   # characters (or .jsonl bytes) per chunk, the unit of work of a tokenizer process
SHARD_CHUNKS = 256      # chunks per shard (~256 MB of text): progress is committed after each one

def prepare(data='shakespeare', tokenizer='byte', out_dir=None, val_fraction=0.05, text_field='text', workers=None):
    """Tokenize the corpus `data` (see nanodllm/corpus.py) into out_dir/{train,val}.bin + meta.json; returns the
    meta dict (as in meta.json) plus 'out_dir'. out_dir: default data/<name>_<tokenizer>_<key>/ (see the module
    docstring); a given out_dir must be empty, missing, or hold this very corpus and settings. A cache is reused,
    never rewritten; concurrent calls wait for each other (a lock file next to the cache). workers: tokenizer
    processes (default: all cores for gpt2, 0 for byte; 0: this process).
    Every problem with the input raises ValueError with one line that names the fix."""
    tok = get_tokenizer(tokenizer)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} must be a number in [0, 1): e.g. 0.05")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers={workers!r} must be an integer >= 0 (0: tokenize in this process)")
    corpus = Corpus(data, text_field)
    settings = dict(tokenizer=tok.name, val_fraction=float(val_fraction), format=FORMAT,
                    text_field=text_field if corpus.hf or any(k != '.txt' for _, k in corpus.files) else None)
    # 1. a finished cache of these settings whose source files are unchanged (size, inode, times): no reading
    signature = corpus.signature()
    prefix = f'{corpus.name}_{tok.name}_'
    for d in [Path(out_dir)] if out_dir else sorted(Path('data').glob(glob.escape(prefix) + '[0-9a-f]' * 12)):
        if meta := _cached(d, dict(settings, source_signature=signature)):
            return meta
    # 2. the cache of this content: found, or written under a lock
    key = dict(settings, source_sha256=corpus.fingerprint())
    out_dir = Path(out_dir or Path('data') / (prefix + _sha256(key)[:12]))
    with _lock(out_dir):
        if meta := _cached(out_dir, key):  # the same bytes under other file times, or another process wrote it
            return meta
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise ValueError(f"{out_dir} already holds something else than the tokens of {corpus.source} with "
                             f"these settings: pass another --out-dir, or delete it")
        _tokenize(corpus, tok, out_dir, key, signature, workers)
    return _cached(out_dir, key)

def _sha256(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()

def _cached(out_dir, key):
    """meta + out_dir of the finished cache in out_dir if its meta.json matches key, else None."""
    try:
        meta = json.loads((Path(out_dir) / 'meta.json').read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in key.items()):
        return None
    tok_dtype = get_tokenizer(meta['tokenizer']).dtype
    for split in ('train', 'val'):  # a finished cache is never written again: a size mismatch means damage
        path, expected = Path(out_dir) / f'{split}.bin', meta.get(f'{split}_tokens', -1) * np.dtype(tok_dtype).itemsize
        if not path.is_file() or path.stat().st_size != expected:
            raise ValueError(f"{path} is damaged (not the {expected:,} bytes that meta.json promises): delete "
                             f"{out_dir} and prepare again")
    return {**meta, 'out_dir': str(out_dir)}

@contextlib.contextmanager
def _lock(out_dir):
    """An exclusive flock on <out_dir>.lock while out_dir is prepared: one process writes, the others wait and
    then find the finished cache. The lock goes with the process, even on kill -9 (the file itself stays)."""
    path = out_dir.with_name(out_dir.name + '.lock')
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, 'a')
    except OSError as e:
        raise ValueError(f"cannot write {path} ({e.strerror}): run from a writable folder or pass a writable "
                         f"--out-dir") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is preparing {out_dir}", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            raise ValueError(f"cannot lock {path} ({e.strerror}): pass an --out-dir on a local disk") from None
        yield

def _is_val(i, val_fraction):
    """Document i goes to val when floor((i+1) f) > floor(i f): floor(n f) of the first n documents."""
    per_million = round(val_fraction * 1_000_000)  # integers: no float rounding in the test
    return (i + 1) * per_million // 1_000_000 > i * per_million // 1_000_000

def _tokenize(corpus, tok, out_dir, key, signature, workers):
    """Stream the corpus through the tokenizer into <out_dir>.partial/, then rename that to out_dir (caller holds
    the lock). Resumable per shard: after every SHARD_CHUNKS chunks the bins are fsynced and progress.json is
    replaced atomically; a run that was killed or interrupted resumes from the last committed shard (its bins are
    cut back to the committed sizes; earlier chunks are re-read, not re-tokenized). An input error discards the
    partial folder: fixing the input changes the key anyway."""
    work, size = out_dir.with_name(out_dir.name + '.partial'), tok.dtype.itemsize
    state = dict(key=key, chunk_chars=CHUNK_CHARS, chunks=0, split='train', n_documents=0, train_documents=0,
                 val_documents=0, train_tokens=0, val_tokens=0)
    saved = _read_json(work / 'progress.json') or {}
    if ((saved.get('key'), saved.get('chunk_chars')) == (key, CHUNK_CHARS)
            and all(_size(work / f'{s}.bin') >= saved[f'{s}_tokens'] * size for s in ('train', 'val'))):
        state = saved
        print(f"resuming {work}: {state['n_documents']:,} documents were done", file=sys.stderr, flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    files = {}
    try:
        for split in ('train', 'val'):  # cut back to the last commit, then append
            (work / f'{split}.bin').touch()
            os.truncate(work / f'{split}.bin', state[f'{split}_tokens'] * size)
            files[split] = open(work / f'{split}.bin', 'ab')
        sep, t0, tokens0 = np.array(tok.sep, dtype=tok.dtype), time.time(), state['train_tokens'] + state['val_tokens']
        parts = corpus.tokenized(tok, workers, CHUNK_CHARS, skip=state['chunks'])
        with contextlib.closing(parts), tqdm(desc='tokenizing', unit=' docs', initial=state['n_documents'],
                                             disable=None) as bar:  # closing: stops the workers on any error
            for new_docs, pieces in parts:
                for new_doc, ids in zip(new_docs, pieces):
                    if new_doc:  # a document starts: choose its split; sep between the documents of a split
                        state['split'] = 'val' if _is_val(state['n_documents'], key['val_fraction']) else 'train'
                        state['n_documents'] += 1
                        state[state['split'] + '_documents'] += 1
                        ids = np.concatenate([sep, ids]) if state[state['split'] + '_tokens'] else ids
                    files[state['split']].write(ids.tobytes())
                    state[state['split'] + '_tokens'] += len(ids)
                state['chunks'] += 1
                if state['chunks'] % SHARD_CHUNKS == 0:
                    _commit(files, state, work)
                tokens = state['train_tokens'] + state['val_tokens']
                bar.update(state['n_documents'] - bar.n)
                bar.set_postfix_str(f"{tokens:,} tokens, {(tokens - tokens0) / (time.time() - t0 + 1e-9):,.0f} "
                                    f"tokens/s", refresh=False)
        _commit(files, state, work)
        for f in files.values():
            f.close()
        if not state['n_documents']:
            raise ValueError(f"no text in {corpus.source}: every document is empty; pass non-empty text")
        if key['val_fraction'] and not state['val_documents']:  # too few documents: val = the last f of the tokens
            n_val = int(state['train_tokens'] * key['val_fraction'])
            _move_tail(work / 'train.bin', work / 'val.bin', n_val * size)
            state['train_tokens'], state['val_tokens'] = state['train_tokens'] - n_val, n_val
        if corpus.signature() != signature:
            raise ValueError(f"{corpus.source} changed while it was tokenized: prepare again once it is final")
    except ValueError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        for f in files.values():
            f.close()
    meta = dict(key, source=corpus.source, source_signature=signature, n_vocab=tok.n_vocab, bos=tok.bos,
                sep=tok.sep, dtype=tok.dtype.name, val_split='documents' if state['val_documents'] else 'last tokens',
                **{k: state[k] for k in ('train_tokens', 'val_tokens', 'n_documents', 'train_documents',
                                         'val_documents')})
    (work / 'progress.json').unlink()
    publish(work, out_dir, meta)


def publish(work, out_dir, meta):
    """A finished cache folder appears whole: meta.json written last, then one rename of the work folder (atomic:
    out_dir is absent or empty, checked under the lock), then the parent folder synced. Also used by records.py."""
    _write_json(work / 'meta.json', meta)
    os.rename(work, out_dir)
    _fsync(out_dir.parent)


def _move_tail(train, val, n_bytes):
    """val = the last n_bytes of train, which loses them (the split of a corpus of few documents, or records)."""
    keep = _size(train) - n_bytes
    with open(train, 'rb') as src, open(val, 'wb') as dst:
        src.seek(keep)
        shutil.copyfileobj(src, dst, 1 << 22)
        dst.flush()
        os.fsync(dst.fileno())
    os.truncate(train, keep)  # killed after this: train.bin < committed, a fresh start

def _commit(files, state, work):
    for f in files.values():
        f.flush()
        os.fsync(f.fileno())
    _write_json(work / 'progress.json', state)

def _size(path):
    return path.stat().st_size if path.is_file() else -1

def _read_json(path):
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None

def _write_json(path, obj):
    """Atomic: a temporary file with a unique name (two writers never rename each other's), fsynced, renamed."""
    tmp = path.with_name(f'{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)

def _fsync(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

# -----------------------------------------------------------------------------
# batches

def _open_bin(bin_path):
    """np.memmap (N,) of a .bin; its dtype comes from the meta.json that prepare() wrote next to it."""
    bin_path = Path(bin_path)
    meta = bin_path.parent / 'meta.json'
    if not meta.exists():
        raise ValueError(f"{meta} not found: create {bin_path.parent} with "
                         f"`python -m nanodllm.data --data ... --out-dir {bin_path.parent}`")
    dtype = json.loads(meta.read_text())['dtype']
    if bin_path.exists() and bin_path.stat().st_size == 0:  # e.g. val.bin with val_fraction=0; mmap can't map it
        return np.zeros(0, dtype=dtype)
    return np.memmap(bin_path, dtype=dtype, mode='r')

def _n_blocks(bin_path, batch_size, seq_len, world_size, split):
    n_blocks = len(_open_bin(bin_path)) // seq_len
    if n_blocks < batch_size * world_size:
        raise ValueError(
            f"{bin_path} has {n_blocks} blocks of seq_len={seq_len} tokens but one step needs batch_size*world_size = "
            f"{batch_size}*{world_size} = {batch_size * world_size}: use a smaller --batch-size or --seq-len, or more "
            f"{split} data" + (" (e.g. a larger val_fraction)" if split == 'val' else ""))
    return n_blocks

def _to_batch(tokens, blocks, seq_len, device, prompt_lengths=None):
    """tokens (N,) memmap, blocks: block indices (B,) -> LongTensor (B, seq_len) on device; with prompt_lengths
    (records: the (rows,) prompt length of each row) -> (x0, given), given (B, seq_len) bool, True on the prompt."""
    x = torch.from_numpy(np.stack([tokens[i * seq_len:(i + 1) * seq_len] for i in blocks]).astype(np.int64))
    out = [x]
    if prompt_lengths is not None:
        lengths = torch.from_numpy(prompt_lengths[np.asarray(blocks, dtype=np.int64)].astype(np.int64))  # (B,)
        out.append(torch.arange(seq_len) < lengths[:, None])                                    # (B, L) bool
    if torch.device(device).type == 'cuda':
        out = [t.pin_memory().to(device, non_blocking=True) for t in out]
    else:
        out = [t.to(device) for t in out]
    return out[0] if prompt_lengths is None else tuple(out)


def _prompt_lengths(path):
    """The int32 prompt length of each row of a records split (nanodllm/records.py), or None for text data."""
    return None if path is None else np.fromfile(path, dtype=np.int32)


def split_batch(batch):
    """A Loader / eval_batches batch -> (x0 (B, L), given (B, L) bool or None): given is None for text data."""
    return batch if isinstance(batch, tuple) else (batch, None)

class Loader:
    """Infinite (batch_size, seq_len) training batches. The stream is cut into non-overlapping blocks of seq_len
    tokens; each epoch visits them in a random order seeded by (seed, epoch), identical on all ranks. Step s
    uses blocks order[s*B*W : (s+1)*B*W] and rank r takes the r-th B of them, so 1 process with batch 2B sees the
    same blocks as 2 ranks with batch B. The last incomplete global batch of an epoch is dropped.
    prompt_path: for prompt/response records (nanodllm/records.py), where a block is one row, the file of its prompt
    lengths: next_batch then returns (x0, given), given (B, T) bool True on the prompt (the row's given positions)."""
    def __init__(self, bin_path, batch_size, seq_len, rank=0, world_size=1, seed=0, device='cpu', prompt_path=None):
        self.bin_path, self.B, self.T, self.rank, self.W = bin_path, batch_size, seq_len, rank, world_size
        self.seed, self.device, self.prompt_lengths = seed, device, _prompt_lengths(prompt_path)
        self.n_blocks = _n_blocks(bin_path, batch_size, seq_len, world_size, 'train')
        self.steps_per_epoch = self.n_blocks // (batch_size * world_size)
        self.epoch, self.step = 0, 0  # position of the next batch
        self._order = None  # (epoch, permutation of the blocks)

    def next_batch(self):
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, np.random.default_rng((self.seed, self.epoch)).permutation(self.n_blocks))
        start = (self.step * self.W + self.rank) * self.B
        blocks = self._order[1][start:start + self.B]
        self.step += 1
        # re-open the memmap per batch like nanoGPT: a long-lived memmap keeps every page it touched mapped,
        # so the resident memory would grow to the whole file (opening costs microseconds)
        return _to_batch(_open_bin(self.bin_path), blocks, self.T, self.device, self.prompt_lengths)

    def state_dict(self):
        return dict(epoch=self.epoch, step=self.step, seed=self.seed, global_batch=self.B * self.W, seq_len=self.T)

    def load_state_dict(self, state):
        mine = dict(seed=self.seed, global_batch=self.B * self.W, seq_len=self.T)
        if any(state[k] != v for k, v in mine.items()):
            raise ValueError(f"loader state {state} does not fit this loader {mine}: resume with the same --seed, "
                             f"--seq-len and batch_size*world_size")
        self.epoch, self.step = state['epoch'], state['step']

def eval_batches(bin_path, batch_size, seq_len, rank=0, world_size=1, max_batches=None, device='cpu',
                 prompt_path=None):
    """Fixed evaluation batches: global batch k = blocks [k*B*W, (k+1)*B*W) in file order, rank r takes the r-th B.
    Every rank gets the same number of batches. Errors are raised here, not at the first next().
    prompt_path: as for Loader (records: batches are (x0, given))."""
    prompt_lengths = _prompt_lengths(prompt_path)
    n_batches = _n_blocks(bin_path, batch_size, seq_len, world_size, 'val') // (batch_size * world_size)
    n_batches = n_batches if max_batches is None else min(n_batches, max_batches)
    def batches():
        for k in range(n_batches):
            start = (k * world_size + rank) * batch_size
            yield _to_batch(_open_bin(bin_path), range(start, start + batch_size), seq_len, device, prompt_lengths)
    return batches()

# -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        self.exit(2, f"error: {message}\n")

def _number(kind, low, high=None):
    """argparse type: a finite `kind` in [low, high), naming the range when it is not."""
    def parse(text):
        try:
            x = kind(text)
        except ValueError:
            x = None
        if x is None or not math.isfinite(x) or x < low or (high is not None and x >= high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'} in "
                                             f"[{low}, {high if high is not None else 'inf'})")
        return x
    return parse

def main(argv=None):
    p = _Parser(description='Tokenize a corpus into train.bin / val.bin / meta.json (streamed, any size).',
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', default='shakespeare',
                   help="'shakespeare' (bundled, 42 works, 5 MB), a .txt / .jsonl / .jsonl.gz file, a folder of "
                        "them, or hf:NAME[:CONFIG] (a Hugging Face dataset; pip install -e '.[hf]')")
    p.add_argument('--tokenizer', default='byte', choices=TOKENIZERS, help='byte: 256 ids; gpt2: 50257 ids')
    p.add_argument('--out-dir', default=None, help='output folder (default: data/<name>_<tokenizer>_<key>)')
    p.add_argument('--val-fraction', type=_number(float, 0, 1), default=0.05,
                   help='fraction of the documents held out as val (of the tokens, for fewer than 1/f documents)')
    p.add_argument('--text-field', default='text', help='.jsonl / hf: the field that holds the text')
    p.add_argument('--workers', type=_number(int, 0), default=None,
                   help='tokenizer processes (default: all cores for gpt2, 0 for byte; 0: this process)')
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        meta = prepare(args.data, args.tokenizer, args.out_dir, args.val_fraction, args.text_field, args.workers)
    except ValueError as e:
        p.exit(2, f"error: {e}\n")
    except KeyboardInterrupt:
        p.exit(130, "interrupted: run the same command again to resume from the last shard\n")
    except OSError as e:  # e.g. a full disk while writing: what was committed stays
        p.exit(1, f"error: {e}: fix it and run the same command again to resume from the last shard\n")
    print(f"{meta['out_dir']}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens from "
          f"{meta['n_documents']:,} documents ({meta['tokenizer']}, n_vocab {meta['n_vocab']}, {meta['dtype']}; "
          f"{time.time() - t0:.1f} s) from {meta['source']}")

if __name__ == '__main__':
    main()
