"""Task accuracy of a checkpoint (spec sft.md §3): decode the prompts of a task's test (or val) records with any
family, decoding order and step count, cut each response at the first EOS, score it with the task's scorer
(nanodllm/tasks.py), and measure the sampler: NFE (network calls per batch) and tokens/s (generated positions per
second of sampling, prompts excluded).

    rows = taskeval.evaluate(model, ckpt, 'sudoku', records, steps=[8, 32], order='confidence')
    python sample.py --ckpt out/ckpt.pt --task sudoku --order confidence --steps 8,32   # the same, printed

The canvas of every row is the checkpoint's training length: the prompt is given (kept fixed) at the start, the
rest is generated, as the rows were trained (prompt + response + EOS padding, spec contract). `--task` is a bundled
task name (its default test split, regenerated from seed 0), a folder written by `python -m nanodllm.tasks`
(task.json + test.jsonl), or a user's .jsonl of prompt/response or GSM8K question/answer records, scored as GSM8K.
"""
import json
import os
import time

import torch

from nanodllm import data, tasks
from nanodllm.families import get_family

from nanodllm.decode import FREE
from nanodllm.quality import sampler_kwargs as family_kwargs


def load_task(spec, split='test', n=None):
    """'sudoku' (its default parameters; the split of the CLI's defaults, seed 0: 200 val, 200 test) | a folder
    written by `python -m nanodllm.tasks` | a .jsonl file (scored as GSM8K) -> (task name, records[:n], parameters)."""
    if spec in tasks.GENERATED:
        name, params = spec, tasks.params_of(spec)
        records = tasks.make_splits(spec, 0, 200, 200, **params)[split]
    elif os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, 'task.json')):
            raise ValueError(f"--task {spec}: no task.json in this folder; write one with python -m nanodllm.tasks")
        with open(os.path.join(spec, 'task.json')) as f:
            meta = json.load(f)
        name, params = meta['task'], meta['params']
        records = tasks.read_records(os.path.join(spec, f'{split}.jsonl'))
    elif spec.endswith('.jsonl') and os.path.isfile(spec):
        name, params, records = 'gsm8k', {}, tasks.read_records(spec)
    else:
        raise ValueError(f"unknown task {spec!r}: use one of {', '.join(tasks.GENERATED)}, a folder written by "
                         f"python -m nanodllm.tasks, or a .jsonl file of prompt/response (or GSM8K) records")
    if not records:
        raise ValueError(f"--task {spec}: the {split} split has no records")
    return name, records[:n] if n else records, params


BYTE_TASKS = ('sudoku', 'arith', 'countdown')  # their text is designed byte by byte (one Sudoku cell = one token)


def check_checkpoint(ckpt, task):
    """A bundled task needs a byte-tokenizer checkpoint (a user's GSM8K file any tokenizer): one-line ValueError."""
    if task in BYTE_TASKS and ckpt['tokenizer'] != 'byte':
        n = data.get_tokenizer(ckpt['tokenizer']).n_vocab
        raise ValueError(f"the bundled task {task} is byte-level but this checkpoint has the {ckpt['tokenizer']} "
                         f"vocabulary ({n} ids): evaluate a checkpoint trained on the task's records with "
                         f"--tokenizer byte")


def encode_prompts(records, tokenizer, length, n_ids):
    """Prompt ids of each record, checked against the checkpoint: every id inside its vocabulary (`n_ids` real ids)
    and every prompt leaving room for its reference response and EOS within `length`. One-line ValueErrors."""
    out = []
    for k, r in enumerate(records):
        ids, ref = tokenizer.encode(r['prompt']), tokenizer.encode(r['response'])
        if max(ids + ref, default=0) >= n_ids:
            raise ValueError(f"the task's text needs token id {max(ids + ref)} but the checkpoint's vocabulary has "
                             f"{n_ids} ids: evaluate a checkpoint trained on this task's records (--tokenizer byte)")
        if len(ids) + len(ref) + 1 > length:
            raise ValueError(f"record {k} is {len(ids) + len(ref) + 1} tokens (prompt + response + EOS) but the "
                             f"checkpoint's rows are {length}: train with a larger --seq-len")
        out.append(ids)
    return out


def decode_response(row, start, tokenizer):
    """The generated text of a row (ids from `start` to the first EOS, exclusive) -> str."""
    ids = row[start:].tolist()
    if tokenizer.eos in ids:
        ids = ids[:ids.index(tokenizer.eos)]
    return tokenizer.decode(ids)


def decode_settings(family_name, steps_list, orders=None):
    """The (order, steps, block_size) settings a family can run: AR once, left to right; Duo its own sampler at
    each step count and left to right; MDLM and Eso-LM also by confidence and margin. `orders` filters by name
    ('random', 'confidence', 'margin', 'l2r')."""
    if family_name == 'ar':
        out = [('l2r', None, None)]
    else:
        named = ['random'] + (['confidence', 'margin'] if family_name in ('mdlm', 'eso') else [])
        out = [(o, s, None) for o in named for s in steps_list] + [('l2r', 1, 1)]
    return [s for s in out if orders is None or s[0] in orders]


@torch.no_grad()
def evaluate(model, ckpt, task, records, settings, temperature=0.0, batch_size=0, seed=0, length=None,
             **sampler_kwargs):
    """Accuracy of `model` on `records` for each (order, steps, block_size) setting -> a list of rows:
    {order, steps, block_size, accuracy, (cells,) nfe, tokens_per_s, seconds, n}. order 'l2r' is the family's
    sampler with block_size=1, steps=1 (left to right, one token per step; AR's own order)."""
    family_name = ckpt['family']
    family, tok = get_family(family_name), data.get_tokenizer(ckpt['tokenizer'])
    length = length or model.cfg.seq_len
    check_checkpoint(ckpt, task)
    prompts = encode_prompts(records, tok, length, tok.n_vocab)
    device = next(model.parameters()).device
    batch_size = batch_size or len(records)
    rows = []
    for order, steps, block_size in settings:
        scores, nfe, seconds, generated = [], 0, 0.0, 0
        gen = torch.Generator(device).manual_seed(seed)
        for start in range(0, len(records), batch_size):
            chunk = prompts[start:start + batch_size]
            given = torch.full((len(chunk), length), FREE, dtype=torch.long)
            for i, ids in enumerate(chunk):
                given[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            kwargs = dict(family_kwargs(ckpt), **sampler_kwargs)  # Eso-LM: the trained alpha0
            kwargs.update(given=given.to(device), temperature=temperature, generator=gen, steps=steps,
                          order='random' if order == 'l2r' else order, block_size=block_size)
            t0 = time.perf_counter()
            x, calls = family.sample(model, len(chunk), length, **kwargs)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            nfe = max(nfe, int(calls))
            generated += sum(length - len(ids) for ids in chunk)
            for i, ids in enumerate(chunk):
                r = records[start + i]
                pred = decode_response(x[i].cpu(), len(ids), tok)
                scores.append(tasks.score(task, r['prompt'], pred, r['response']))
        row = dict(order=order, steps=steps, block_size=block_size, n=len(records),
                   accuracy=sum(s['correct'] for s in scores) / len(scores), nfe=nfe,
                   tokens_per_s=generated / seconds if seconds > 0 else None, seconds=seconds)
        if 'cells' in scores[0]:
            row['cells'] = sum(s['cells'] for s in scores) / len(scores)
        rows.append(row)
    return rows


def format_rows(rows):
    """A small text table of evaluate()'s rows."""
    lines = [f"{'order':>10} {'steps':>5} {'block':>5} {'accuracy':>8} {'cells':>6} {'NFE':>5} {'tok/s':>9}"]
    for r in rows:
        cells = f"{r['cells']:.3f}" if 'cells' in r else '-'
        tps = f"{r['tokens_per_s']:,.0f}" if r['tokens_per_s'] else '-'
        lines.append(f"{r['order']:>10} {str(r['steps'] or '-'):>5} {str(r['block_size'] or '-'):>5} "
                     f"{r['accuracy']:8.3f} {cells:>6} {r['nfe']:5d} {tps:>9}")
    return '\n'.join(lines)
