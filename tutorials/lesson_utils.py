"""What every lesson script shares: its command line, the Shakespeare data, a small in-process training loop,
loading a user's checkpoint instead (or saving a model trained here as one), and writing figures.

Nothing here is part of nanodllm: it only calls the package's public functions (data.prepare, Model, a family's
`loss` and `sample`, checkpoint.load_checkpoint / make_checkpoint / save_checkpoint), so a lesson shows exactly what
train.py and sample.py would do.
"""
import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # `python tutorials/03_mdlm.py` imports this checkout's nanodllm, installed or not
    sys.path.insert(0, ROOT)

import matplotlib
matplotlib.use('Agg')  # write files, never open windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nanodllm import data  # noqa: E402
from nanodllm.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint  # noqa: E402
from nanodllm.families import get_family  # noqa: E402
from nanodllm.config import get_config  # noqa: E402
from nanodllm.model import Model  # noqa: E402


def parser(doc, ckpt=None):
    """The flags every lesson takes. ckpt: None (the lesson trains nothing), 'one' or 'many' (--ckpt repeatable)."""
    p = argparse.ArgumentParser(description=doc.strip().split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--quick', action='store_true', help='tiny sizes and few steps: seconds, for the tests')
    p.add_argument('--out-dir', default=HERE, help='where the figures go (default: next to the lesson)')
    p.add_argument('--seed', type=int, default=0)
    if ckpt == 'one':
        p.add_argument('--ckpt', default=None, help='use this train.py checkpoint instead of training a small model')
    elif ckpt == 'many':
        p.add_argument('--ckpt', action='append', default=[],
                       help='a train.py checkpoint to use instead of training that family (repeat for several)')
    if ckpt:
        p.add_argument('--train-steps', type=int, default=None, help='steps of the in-process training (default: '
                                                                     'the lesson\'s choice)')
    return p


def fail(msg):
    """A bad input: one line on stderr, exit code 2 (the house rule)."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


# -----------------------------------------------------------------------------
# data

class Text:
    """The tokenized corpus: `train` and `val` token arrays and the tokenizer (byte-level by default: V = 256 + mask).
    The .bin files are the ones train.py uses (nanodllm/data.py:prepare writes them under data/ of the cwd)."""

    def __init__(self, name='shakespeare', tokenizer='byte'):
        meta = data.prepare(name, tokenizer)
        self.name = name
        self.tokenizer = data.get_tokenizer(tokenizer)
        self.train = np.fromfile(os.path.join(meta['out_dir'], 'train.bin'), dtype=meta['dtype'])
        self.val = np.fromfile(os.path.join(meta['out_dir'], 'val.bin'), dtype=meta['dtype'])

    def batch(self, B, L, split='train', generator=None):
        """B random windows of L tokens -> LongTensor (B, L) (nanoGPT's get_batch)."""
        ids = self.train if split == 'train' else self.val
        starts = torch.randint(len(ids) - L, (B,), generator=generator).tolist()
        return torch.from_numpy(np.stack([ids[s:s + L] for s in starts]).astype(np.int64))

    def val_batch(self, B, L):
        """The first B blocks of L validation tokens: the same every call."""
        return torch.from_numpy(self.val[:B * L].astype(np.int64).reshape(B, L))

    def cells(self, ids, mask_id=None):
        """One printable string per position: the mask is '▮', a newline '⏎', any other unprintable byte '·'.
        Byte tokenizer: one character per token, so positions line up; other tokenizers: the token's text."""
        ids = ids.tolist() if hasattr(ids, 'tolist') else list(ids)
        out = []
        for i in ids:
            if i == mask_id or not 0 <= i < self.tokenizer.n_vocab:
                out.append('\u25ae')
            elif self.tokenizer.name == 'byte':
                out.append('\u23ce' if i == 10 else chr(i) if 32 <= i < 127 else '\u00b7')
            else:
                s = self.tokenizer.decode([i])
                out.append(''.join('\u23ce' if c == '\n' else c if c.isprintable() else '\u00b7' for c in s))
        return out

    def show(self, ids, mask_id=None, width=None):
        """ids -> one printable line (see cells)."""
        s = ''.join(self.cells(ids, mask_id))
        return s if width is None else s[:width]


# -----------------------------------------------------------------------------
# models: train a small one in-process, or load a user's checkpoint

def train(family_name, text, size='nano', seq_len=64, batch_size=16, steps=600, lr=3e-3, seed=0, options=None,
          log_every=100, callback=None):
    """Train a small model of one family, the way train.py does, in a few lines -> (model in eval mode, losses).

    AdamW (betas 0.9/0.95, weight decay 0.1), warmup then cosine to lr/10, gradient clipping 1.0, fp32 on CPU.
    Each step calls the family's `loss(model, x0, train=True, ...)` -> (nll_sum, n_tokens) and minimises the mean.
    callback(step, model), if given, runs before every step (and once after the last).
    """
    family = get_family(family_name)
    options = {**family.OPTIONS, **(options or {})}
    torch.manual_seed(seed)
    model = Model(get_config(size, text.tokenizer.n_vocab + 1, seq_len))  # +1: the mask token is the last id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    g_data = torch.Generator().manual_seed(seed)
    warmup = max(1, min(100, steps // 10))
    losses, t0 = [], time.time()
    for step in range(steps):
        if callback is not None:
            callback(step, model)
        progress = max(0.0, (step - warmup) / max(1, steps - warmup))
        for group in opt.param_groups:
            group['lr'] = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        x0 = text.batch(batch_size, seq_len, generator=g_data)                   # (B, L)
        nll, n = family.loss(model, x0, train=True, generator=torch.Generator().manual_seed(seed * 7919 + step),
                             **options)
        (nll / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append((nll / n).item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"  {family_name} {options or ''} step {step:4d} | train loss {losses[-1]:.3f} | "
                  f"{time.time() - t0:.0f}s", flush=True)
    if callback is not None:
        callback(steps, model)
    return model.eval(), losses


def load(path, family_name=None):
    """A train.py checkpoint -> (model in eval mode, family name, options, Text of its data and tokenizer)."""
    model, ckpt = load_checkpoint(path, 'cpu')
    if family_name is not None and ckpt['family'] != family_name:
        fail(f"{path} holds a {ckpt['family']!r} model but this lesson needs {family_name!r}: pass a "
             f"`train.py --family {family_name}` checkpoint, or no --ckpt")
    text = Text(ckpt.get('args', {}).get('data', 'shakespeare'), ckpt['tokenizer'])
    return model, ckpt['family'], ckpt['options'], text


def save(path, model, family_name, text, size='nano', options=None, step=0, val=None):
    """Write a model trained here as a train.py checkpoint -> path. Everything that takes a checkpoint (sample.py,
    `sweep.py --pareto`, nanodllm/quality.py:load_judge) then takes it, exactly as it takes train.py's.
    val: its validation loss, if measured (val_loss below), recorded as train.py records it."""
    options = {**get_family(family_name).OPTIONS, **(options or {})}
    args = dict(data=text.name, size=size, seq_len=model.cfg.seq_len, family=family_name)
    extra = dict(step=step) if val is None else dict(step=step, val_loss=val)
    save_checkpoint(path, make_checkpoint(model, model.cfg, args, family_name, options, text.tokenizer.name, **extra))
    return path


@torch.no_grad()
def val_loss(family_name, model, text, options=None, batches=8, batch_size=16, seed=1234):
    """Validation loss per token, as train.py reports it: NLL for AR, the NELBO for the diffusion families
    (loss(train=False) never uses the low-variance objective). Masks and t come from a fixed seed."""
    family = get_family(family_name)
    options = {**family.OPTIONS, **(options or {})}
    L = model.cfg.seq_len
    total, count = 0.0, 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for i in range(batches):
            x0 = torch.from_numpy(text.val[i * batch_size * L:(i + 1) * batch_size * L].astype(np.int64))
            nll, n = family.loss(model, x0.view(batch_size, L), train=False,
                                 generator=torch.Generator().manual_seed(seed + i), **options)
            total, count = total + nll.item(), count + n
    return total / count


# -----------------------------------------------------------------------------
# figures

def savefig(fig, args, name):
    """Write the figure into --out-dir (the lesson's folder by default) and say where."""
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, name)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    rel = os.path.relpath(path)
    print(f"wrote {path if rel.startswith('..') else rel}")
    return path
