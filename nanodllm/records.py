"""
Prompt/response records -> rows for conditional training and fine-tuning (issue 18). Owns reading the records,
turning each into one row with its given (prompt) mask, and their cache.

- A record is a JSON object with string fields 'prompt' and 'response', or GSM8K's 'question' and 'answer' (read
  as prompt = question + '\\n', response = answer: GSM8K's fields carry no separator). Records come from a .jsonl /
  .jsonl.gz file, a folder of them, or hf:NAME[:CONFIG] (the train split, e.g. hf:openai/gsm8k:main; optional
  `datasets` extra).
- `detect` tells records from text: a corpus whose first record has a prompt/response (or question/answer) pair
  and no --text-field field is records; one with neither is a one-line error. train.py needs no extra flag.
- Each record becomes ONE row of exactly seq_len tokens (no attention across records, sft.md §2):
      prompt + response + EOS, padded with EOS to seq_len       (Tokenizer.eos: gpt2 <|endoftext|>, byte 0)
  and its given mask (seq_len,) bool, True on the prompt positions: the prompt is clean and never scored; the
  response, its EOS and the EOS padding are what the family's loss corrupts and scores (the padding is trained on,
  so that a fixed canvas learns to stop). The prompt and the response are tokenized separately, as sample.py's
  --prompt is. A record longer than the row is dropped and counted (meta 'dropped', printed in train.py's log).
- Split: record i (in corpus order, every record counted, dropped or not) is val when data._is_val(i, f): floor(n f)
  of n records, spread evenly, the same whatever --seq-len. A set of fewer than 1/f records gets none that way; its
  last kept row then goes to val (as data.py does with the last tokens of a one-document corpus).
- Cache: data/<name>_<tokenizer>_rows<L>_<key>/ holds {train,val}.bin (rows of L ids, the dtype of data.py, so
  data.Loader reads a row as one block), {train,val}.prompt.bin (int32 prompt length of each row) and meta.json
  (kind 'records'). Content-keyed (sha256 of the bytes and the settings), written under data.py's lock into a
  .partial folder renamed when done: it appears whole or not at all. Records are streamed one at a time; they are
  tokenized in this process (records sets are small: GSM8K has 7,473 training records), and a killed preparation
  starts again from the beginning.
"""
import glob, json, shutil
from pathlib import Path

import numpy as np

from . import data
from .corpus import Corpus, _jsonl_blocks, hf_rows

FORMAT = 1                                            # version of the records cache: part of its key
PAIRS = (('prompt', 'response'), ('question', 'answer'))
FIELDS = "'prompt'/'response' (or GSM8K's 'question'/'answer')"


def fields(record):
    """A record (dict) -> (prompt, response) strings, or None when it has neither pair of fields."""
    for p, r in PAIRS:
        if p in record and r in record:
            prompt, response = record[p], record[r]
            return (prompt + '\n' if p == 'question' else prompt), response
    return None


def _read_record(record, where):
    """A parsed record -> (prompt, response), checked; every problem is one line naming the fix."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a JSON {type(record).__name__}, not an object: write one JSON object per line "
                         f"with {FIELDS} fields")
    pair = fields(record)
    if pair is None:
        raise ValueError(f"{where} has no {FIELDS} fields (it has {', '.join(map(repr, list(record)[:8]))}): give "
                         f"every record the same fields")
    for name, value in zip(('prompt', 'response'), pair):
        if not isinstance(value, str):
            raise ValueError(f"{where}: the {name} is a JSON {type(value).__name__}, not a string: write text")
    return pair


def _first_record(corpus):
    """The first record of a corpus (dict or whatever the first non-blank line holds), or None if there is none
    or it is not JSON (data.prepare then reports it)."""
    if corpus.hf:
        return next(iter(hf_rows(*corpus.hf)), None)
    path, kind = corpus.files[0]
    if kind == '.txt':  # a text corpus (a folder that starts with a .txt file too)
        return None
    for _, _, _, lines in _jsonl_blocks(path, 1 << 16):
        for raw in lines.split(b'\n'):
            if raw.strip():
                try:
                    return json.loads(raw)
                except ValueError:
                    return None
    return None


def detect(data_arg, text_field='text'):
    """Is --data a set of prompt/response records? True when its first record has no `text_field` field and has a
    prompt/response (or question/answer) pair; False for text ('shakespeare', .txt, .jsonl with `text_field`). A
    .jsonl whose first record has neither is a one-line ValueError. An hf: set whose cache exists (text or records)
    is decided from the cache, so a prepared set needs no network."""
    corpus = Corpus(data_arg, text_field)
    if corpus.hf:
        for meta_path in sorted(Path('data').glob(glob.escape(corpus.name) + '_*/meta.json')):
            meta = data._read_json(meta_path) or {}
            if meta.get('source') == corpus.source:
                return meta.get('kind') == 'records'
    record = _first_record(corpus)
    if not isinstance(record, dict) or text_field in record:
        return False
    if fields(record) is None:
        raise ValueError(f"the records of {corpus.source} have neither a '{text_field}' field nor {FIELDS} fields "
                         f"(the first has {', '.join(map(repr, list(record)[:8]))}): pass the right --text-field, "
                         f"or write prompt/response records")
    return True


def _records(corpus):
    """Yield (where, record) for every record of the corpus, in order (blank lines skipped), streamed."""
    if corpus.hf:
        for n, row in enumerate(hf_rows(*corpus.hf)):
            yield f'{corpus.source} row {n}', row
        return
    for path, kind in corpus.files:
        if kind == '.txt':
            raise ValueError(f"{path} is a text file in a set of records: put records in .jsonl files only")
        for _, _, first, lines in _jsonl_blocks(path, 1 << 20):
            for n, raw in enumerate(lines.split(b'\n'), first):
                if raw.strip():
                    try:
                        yield f'{path}:{n}', json.loads(raw)
                    except ValueError as e:
                        raise ValueError(f"{path}:{n} is not JSON ({getattr(e, 'msg', None) or e}): write one JSON "
                                         f"object per line") from None


def prepare(data_arg, tokenizer='byte', seq_len=256, val_fraction=0.05, out_dir=None):
    """Records -> rows of seq_len tokens in out_dir (see the module docstring) -> the meta dict plus 'out_dir'.
    Reused when cached; every problem with the input (fields, no record that fits the row) is a one-line ValueError."""
    tok = data.get_tokenizer(tokenizer)
    corpus = Corpus(data_arg)
    settings = dict(kind='records', tokenizer=tok.name, seq_len=int(seq_len), val_fraction=float(val_fraction),
                    records_format=FORMAT)
    signature = corpus.signature()
    prefix = f'{corpus.name}_{tok.name}_rows{seq_len}_'
    for d in [Path(out_dir)] if out_dir else sorted(Path('data').glob(glob.escape(prefix) + '[0-9a-f]' * 12)):
        if meta := _cached(d, dict(settings, source_signature=signature)):
            return meta
    key = dict(settings, source_sha256=corpus.fingerprint())
    out_dir = Path(out_dir or Path('data') / (prefix + data._sha256(key)[:12]))
    with data._lock(out_dir):
        if meta := _cached(out_dir, key):
            return meta
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise ValueError(f"{out_dir} already holds something else than the rows of {corpus.source}: delete it")
        _write_rows(corpus, tok, int(seq_len), out_dir, key, signature)
    return _cached(out_dir, key)


def _cached(out_dir, key):
    meta = data._cached(out_dir, key)  # meta.json matches and {train,val}.bin have their promised sizes
    if meta is not None:
        for split in ('train', 'val'):
            path = Path(out_dir) / f'{split}.prompt.bin'
            if not path.is_file() or path.stat().st_size != 4 * meta[f'{split}_rows']:
                raise ValueError(f"{path} is damaged (not 4 bytes per row): delete {out_dir} and prepare again")
    return meta


def _write_rows(corpus, tok, L, out_dir, key, signature):
    """Stream the records into <out_dir>.partial/, then rename it to out_dir (the caller holds the lock)."""
    work = out_dir.with_name(out_dir.name + '.partial')
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    counts = dict(n_records=0, dropped=0, train_rows=0, val_rows=0, prompt_tokens=0, response_tokens=0)
    shortest, eos, files = None, tok.eos, {}
    try:
        for name in ('train.bin', 'train.prompt.bin', 'val.bin', 'val.prompt.bin'):
            files[name] = open(work / name, 'wb')
        with_nul = tok.name == 'byte'  # NUL is the byte tokenizer's EOS: a NUL in the text would read as the end
        for i, (where, record) in enumerate(_records(corpus)):
            prompt, response = _read_record(record, where)
            if with_nul and ('\0' in prompt or '\0' in response):
                raise ValueError(f"{where} holds a NUL character, the byte tokenizer's EOS: remove it")
            p, r = tok.encode_array(prompt), tok.encode_array(response)
            need = len(p) + len(r) + 1                                  # prompt + response + one EOS at least
            counts['n_records'] += 1
            shortest = need if shortest is None else min(shortest, need)
            if need > L:
                counts['dropped'] += 1
                continue
            row = np.full(L, eos, dtype=tok.dtype)                      # (L,): EOS padding
            row[:len(p)], row[len(p):len(p) + len(r)] = p, r
            split = 'val' if data._is_val(i, key['val_fraction']) else 'train'
            files[f'{split}.bin'].write(row.tobytes())
            files[f'{split}.prompt.bin'].write(np.int32(len(p)).tobytes())
            counts[f'{split}_rows'] += 1
            counts['prompt_tokens'] += len(p)
            counts['response_tokens'] += len(r)
        for f in files.values():
            f.close()
        if not counts['n_records']:
            raise ValueError(f"no records in {corpus.source}: write one JSON object per line with {FIELDS} fields")
        if not counts['train_rows'] + counts['val_rows']:
            raise ValueError(f"none of the {counts['n_records']:,} records of {corpus.source} fits a row of --seq-len "
                             f"{L} (the shortest needs {shortest} tokens: prompt + response + EOS): raise --seq-len "
                             f"to at least {shortest}")
        if key['val_fraction'] and not counts['val_rows'] and counts['train_rows'] >= 2:  # too few records
            for stem, n_bytes in (('', L * tok.dtype.itemsize), ('.prompt', 4)):
                data._move_tail(work / f'train{stem}.bin', work / f'val{stem}.bin', n_bytes)
            counts['train_rows'], counts['val_rows'] = counts['train_rows'] - 1, 1
        if corpus.signature() != signature:
            raise ValueError(f"{corpus.source} changed while it was read: prepare again once it is final")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        for f in files.values():
            f.close()
    meta = dict(key, source=corpus.source, source_signature=signature, n_vocab=tok.n_vocab, bos=tok.bos,
                eos=eos, sep=tok.sep, dtype=tok.dtype.name, train_tokens=counts['train_rows'] * L,
                val_tokens=counts['val_rows'] * L, **counts)
    data.publish(work, out_dir, meta)


def prepare_any(data_arg, tokenizer, seq_len, text_field='text'):
    """What train.py calls: records.prepare for prompt/response records (see detect), data.prepare for text."""
    if detect(data_arg, text_field):
        return prepare(data_arg, tokenizer, seq_len)
    return data.prepare(data_arg, tokenizer, text_field=text_field)


def prompt_path(meta, split):
    """The prompt-length file of a split for data.Loader / eval_batches (records), or None (text)."""
    return str(Path(meta['out_dir']) / f'{split}.prompt.bin') if meta.get('kind') == 'records' else None


def summary(meta):
    """One log line about a records set: rows per split, what was dropped, the mean prompt and response."""
    rows = meta['train_rows'] + meta['val_rows']
    return (f"records: {meta['train_rows']:,} train + {meta['val_rows']:,} val rows of {meta['seq_len']} tokens "
            f"(prompt + response + EOS padding) from {meta['n_records']:,} records of {meta['source']}; "
            f"{meta['dropped']:,} dropped (longer than --seq-len {meta['seq_len']}); mean prompt "
            f"{meta['prompt_tokens'] / rows:.1f}, response {meta['response_tokens'] / rows:.1f} tokens")
