"""The text side of conditional generation (sample.py --infill / --prompt): the infill template syntax -> the given
row the samplers take, and samples -> text cut at EOS. The samplers themselves keep the given tokens fixed
(`given` of every family's sample, nanodllm/decode.py).

Infill template: text with gaps. A gap is `[` underscores `]`, one token per underscore (`[____]` = 4 tokens), or
`[_N_]` with a number between the underscores, N tokens (`[_8_]`, `[__12__]`). Everything else is given text,
tokenized piece by piece (so a gap's tokens never merge with the text around it). A fill may be shorter than its
gap: the model ends it with EOS, and those EOS are not shown.

    >>> row = template_row("O Romeo, [_6_] art thou Romeo?", tokenizer)   # ids, decode.FREE at the 6 gap positions
"""
import re

from .decode import FREE

GAP = re.compile(r'\[(_+)(\d*)(_*)\]')   # [____] or [_N_]


def template_row(text, tokenizer, context=None):
    """An infill template -> (row: list of token ids with FREE at the gap positions, gaps: [(start, end)]).
    One-line ValueError for a template without a gap, a gap of 0 tokens, or a row longer than `context` tokens."""
    row, gaps, at = [], [], 0
    for m in GAP.finditer(text):
        row += tokenizer.encode(text[at:m.start()])
        n = int(m.group(2)) if m.group(2) else len(m.group(1))
        if n < 1:
            raise ValueError(f"--infill: the gap {m.group(0)} has 0 tokens: write [____] (one token per underscore) "
                             f"or [_N_] with N >= 1")
        if context is not None and n > context:
            raise ValueError(f"--infill: the gap {m.group(0)} is {n} tokens, longer than the model's context of "
                             f"{context} tokens: shorten it")
        gaps.append((len(row), len(row) + n))
        row += [FREE] * n
        at = m.end()
    row += tokenizer.encode(text[at:])
    if not gaps:
        raise ValueError("--infill has no gap: mark what to fill with [____] (one token per underscore) or [_N_] "
                         "(N tokens), e.g. \"O Romeo, [_6_] art thou Romeo?\"")
    if context is not None and len(row) > context:
        raise ValueError(f"--infill is {len(row)} tokens (text and gaps) but the model's context is {context}: "
                         f"shorten the text or the gaps")
    return row, gaps


def cut(ids, eos):
    """ids (list) up to, not including, the first EOS."""
    return ids[:ids.index(eos)] if eos in ids else ids


def show_infill(ids, gaps, tokenizer, mask_id=None):
    """A filled row -> text, each gap's fill in brackets and cut at its first EOS: 'O Romeo, [wherefore] art ...'."""
    out, at = [], 0
    for a, b in gaps:
        out += [tokenizer.decode(ids[at:a]), '[', tokenizer.decode(cut(ids[a:b], tokenizer.eos), mask_id), ']']
        at = b
    return ''.join(out + [tokenizer.decode(ids[at:])])
