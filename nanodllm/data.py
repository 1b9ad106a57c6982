"""
Data for nanodllm: tokenizers, corpus -> train.bin/val.bin, and the batch loader.

- get_tokenizer('byte' | 'gpt2'): ids 0..n_vocab-1 are real tokens. The diffusion mask token is NOT part of
  the tokenizer: models append it as id n_vocab. decode() renders any id outside [0, n_vocab) as MASK_CHAR.
- prepare(data, tokenizer): tokenizes the vendored Shakespeare corpus (nanodllm/assets, see ASSETS.md), a text
  file or a folder of *.txt files into out_dir/{train,val}.bin (flat uint16/uint32 token stream) + meta.json.
- Loader: infinite, seeded, rank-sharded (B, T) batches of non-overlapping seq_len blocks of a .bin file.
- eval_batches: fixed, in-order, rank-sharded batches of the val split (the same on every call).
Everything works offline: the corpus and GPT-2's BPE ranks ship with the package.

    python -m nanodllm.data --data shakespeare --tokenizer gpt2      # -> data/shakespeare_gpt2/
"""
import argparse, base64, functools, hashlib, json, lzma, os, re
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).parent / 'assets'
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

def _cut(text, size=1 << 20):
    """Split text into pieces of about `size` chars, cutting only between a non-space and a newline: no GPT-2
    pre-token spans such a boundary, so the ids of the pieces, concatenated, equal the ids of the whole text."""
    cuts = [0]
    while (m := re.compile(r'\S(?=\n)').search(text, cuts[-1] + size)) is not None:
        cuts.append(m.end())
    return [text[a:b] for a, b in zip(cuts, cuts[1:] + [len(text)])]

class Tokenizer:
    """name, n_vocab (real ids only), bos (first token of AR samples), sep (ids put between documents)."""
    def __init__(self, name):
        if name not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {name!r}: use one of {TOKENIZERS}")
        self.name = name
        if name == 'byte':   # ids = the UTF-8 bytes of the text
            self.enc, self.n_vocab, self.bos, self.sep = None, 256, ord('\n'), [10, 10]
        else:                # GPT-2 BPE; <|endoftext|> (50256) starts samples and separates documents
            self.enc = _gpt2_encoding()
            self.n_vocab, self.bos, self.sep = self.enc.n_vocab, self.enc.eot_token, [self.enc.eot_token]

    def encode(self, text):
        """str -> list[int]. gpt2: special-token text like '<|endoftext|>' is encoded as ordinary text."""
        return list(text.encode('utf-8')) if self.enc is None else self.enc.encode_ordinary(text)

    def encode_documents(self, docs):
        """list[str] -> np.int64 array (N,): all documents, self.sep between consecutive ones."""
        if self.enc is None:
            return np.frombuffer('\n\n'.join(docs).encode('utf-8'), dtype=np.uint8).astype(np.int64)  # sep = '\n\n'
        pieces = [(d, piece) for d, doc in enumerate(docs) for piece in _cut(doc)]  # big pieces: fast in parallel
        ids = self.enc.encode_ordinary_batch([piece for _, piece in pieces], num_threads=2)
        out = []
        for k, ((d, _), part) in enumerate(zip(pieces, ids)):
            if k > 0 and pieces[k - 1][0] != d:
                out.append(self.sep)
            out.append(part)
        return np.concatenate([np.asarray(x, dtype=np.int64) for x in out])

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

def _read_documents(data):
    """-> (docs: list[str], source: str, stem: str). 'shakespeare' = the vendored corpus (one document)."""
    if data == 'shakespeare':
        with lzma.open(ASSETS / 'shakespeare.txt.xz') as f:
            return [f.read().decode('utf-8')], 'shakespeare (nanodllm/assets/shakespeare.txt.xz)', 'shakespeare'
    path = Path(data).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass 'shakespeare', a .txt file or a folder of .txt files")
    files = sorted(path.rglob('*.txt')) if path.is_dir() else [path]
    docs = []
    for f in files:
        try:
            docs.append(f.read_bytes().decode('utf-8'))
        except UnicodeDecodeError as e:
            raise ValueError(f"{f} is not UTF-8 ({e}): convert it to UTF-8, or remove it from the folder") from None
    docs = [d for d in docs if d]  # empty files would only add separators
    if not docs:
        raise ValueError(f"no text in {path}: pass a non-empty .txt file or a folder with non-empty *.txt files")
    return docs, str(path), path.stem

def _write_atomic(path, data: bytes):
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:
        f.write(data); f.flush(); os.fsync(f.fileno())
    os.replace(tmp, path)  # a crash leaves the old file or a .tmp, never a half-written file under the real name

def prepare(data='shakespeare', tokenizer='byte', out_dir=None, val_fraction=0.05):
    """Tokenize `data` ('shakespeare', a .txt file, or a folder: its *.txt files, recursively, sorted by path,
    tokenizer.sep between them) into out_dir (default data/<stem>_<tokenizer>/ under the cwd). The last
    val_fraction of the token stream is val.bin. Skipped when meta.json already matches.
    Returns the meta dict (as in meta.json) plus 'out_dir'."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1): e.g. 0.05")
    docs, source, stem = _read_documents(data)
    tok = get_tokenizer(tokenizer)
    out_dir = Path(out_dir if out_dir is not None else f'data/{stem}_{tok.name}')
    sha = hashlib.sha256(b'\0'.join(d.encode('utf-8') for d in docs)).hexdigest()
    key = dict(source=source, source_sha256=sha, tokenizer=tok.name, val_fraction=val_fraction)
    meta_path = out_dir / 'meta.json'
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        size = np.dtype(meta.get('dtype', 'uint16')).itemsize
        if (all(meta.get(k) == v for k, v in key.items())
                and all((out_dir / f'{s}.bin').exists() and (out_dir / f'{s}.bin').stat().st_size
                        == size * meta[f'{s}_tokens'] for s in ('train', 'val'))):
            return {**meta, 'out_dir': str(out_dir)}
        meta_path.unlink()  # stale: remove first, so a crash below cannot leave old meta next to new bins
    ids = tok.encode_documents(docs)                       # (N,) int64
    dtype = np.uint16 if tok.n_vocab + 1 < 2**16 else np.uint32
    n_val = int(len(ids) * val_fraction)
    train, val = ids[:len(ids) - n_val].astype(dtype), ids[len(ids) - n_val:].astype(dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / 'train.bin', train.tobytes())
    _write_atomic(out_dir / 'val.bin', val.tobytes())
    meta = dict(key, n_vocab=tok.n_vocab, bos=tok.bos, sep=tok.sep, dtype=np.dtype(dtype).name,
                train_tokens=len(train), val_tokens=len(val), n_documents=len(docs),
                source_chars=sum(len(d) for d in docs))
    _write_atomic(meta_path, json.dumps(meta, indent=2).encode())  # last: its presence means the bins are whole
    return {**meta, 'out_dir': str(out_dir)}

# -----------------------------------------------------------------------------
# batches

def _open_bin(bin_path):
    """np.memmap (N,) of a .bin; its dtype comes from the meta.json that prepare() wrote next to it."""
    bin_path = Path(bin_path)
    meta = bin_path.parent / 'meta.json'
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: create {bin_path.parent} with "
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

def _to_batch(tokens, blocks, seq_len, device):
    """tokens (N,) memmap, blocks: block indices (B,) -> LongTensor (B, seq_len) on device."""
    x = torch.from_numpy(np.stack([tokens[i * seq_len:(i + 1) * seq_len] for i in blocks]).astype(np.int64))
    if torch.device(device).type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)

class Loader:
    """Infinite (batch_size, seq_len) training batches. The stream is cut into non-overlapping blocks of seq_len
    tokens; each epoch visits them in a random order seeded by (seed, epoch), identical on all ranks. Step s
    uses blocks order[s*B*W : (s+1)*B*W] and rank r takes the r-th B of them, so 1 process with batch 2B sees the
    same blocks as 2 ranks with batch B. The last incomplete global batch of an epoch is dropped."""
    def __init__(self, bin_path, batch_size, seq_len, rank=0, world_size=1, seed=0, device='cpu'):
        self.bin_path, self.B, self.T, self.rank, self.W = bin_path, batch_size, seq_len, rank, world_size
        self.seed, self.device = seed, device
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
        return _to_batch(_open_bin(self.bin_path), blocks, self.T, self.device)

    def state_dict(self):
        return dict(epoch=self.epoch, step=self.step, seed=self.seed, global_batch=self.B * self.W, seq_len=self.T)

    def load_state_dict(self, state):
        mine = dict(seed=self.seed, global_batch=self.B * self.W, seq_len=self.T)
        if any(state[k] != v for k, v in mine.items()):
            raise ValueError(f"loader state {state} does not fit this loader {mine}: resume with the same --seed, "
                             f"--seq-len and batch_size*world_size")
        self.epoch, self.step = state['epoch'], state['step']

def eval_batches(bin_path, batch_size, seq_len, rank=0, world_size=1, max_batches=None, device='cpu'):
    """Fixed evaluation batches: global batch k = blocks [k*B*W, (k+1)*B*W) in file order, rank r takes the r-th B.
    Every rank gets the same number of batches. Errors are raised here, not at the first next()."""
    n_batches = _n_blocks(bin_path, batch_size, seq_len, world_size, 'val') // (batch_size * world_size)
    n_batches = n_batches if max_batches is None else min(n_batches, max_batches)
    def batches():
        for k in range(n_batches):
            start = (k * world_size + rank) * batch_size
            yield _to_batch(_open_bin(bin_path), range(start, start + batch_size), seq_len, device)
    return batches()

# -----------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description='Tokenize a corpus into train.bin / val.bin / meta.json.')
    p.add_argument('--data', default='shakespeare',
                   help="'shakespeare' (vendored, 42 works, 5 MB), a .txt file, or a folder of *.txt files")
    p.add_argument('--tokenizer', default='byte', choices=TOKENIZERS, help='byte: 256 ids; gpt2: 50257 ids')
    p.add_argument('--out-dir', default=None, help='output folder (default: data/<name>_<tokenizer>)')
    p.add_argument('--val-fraction', type=float, default=0.05, help='last fraction of the tokens used as val')
    args = p.parse_args(argv)
    meta = prepare(args.data, args.tokenizer, args.out_dir, args.val_fraction)
    print(f"{meta['out_dir']}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['tokenizer']}, n_vocab {meta['n_vocab']}, {meta['dtype']}) from {meta['source']}")

if __name__ == '__main__':
    main()
