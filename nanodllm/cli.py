"""Command-line plumbing shared by train.py, sample.py, sweep.py and `python -m nanodllm.data`: an argparse parser
whose errors are one line, and argparse `type=` helpers that check a flag where it is parsed.

    p = cli.ArgumentParser(description=...)
    p.add_argument('--lr', type=cli.number(gt=0), default=1e-3)
    p.add_argument('--seq-len', type=cli.integer(min=1), default=256)
    args = p.parse_args()          # `--lr -1` -> "error: argument --lr: must be a finite number > 0, got '-1'", exit 2
    p.fail("--min-lr 1 is above --lr 0.1")   # checks that need two flags: the same one-line form

Every message names the flag (argparse adds "argument --flag:") and the allowed range; no traceback, exit code 2.
"""
import argparse
import math
import re
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: <message>` on stderr, exit code 2 (no usage block)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('formatter_class', argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")

    def exit(self, status=0, message=None):
        """argparse's exit; in a process of a torchrun job, through common.exit_process (leaves the group first)."""
        if message:
            self._print_message(message, sys.stderr)
        if 'torch.distributed' in sys.modules:  # (torch is imported only if it is needed)
            from .common import exit_process
            exit_process(status, together=False)
        sys.exit(status)

    def fail(self, message, code=2):
        """A refusal that needs more than one flag, or a user-facing failure found later: one line, exit `code`."""
        self.exit(code, f"error: {' '.join(str(message).split())}\n")

    def fail_together(self, problem, ddp=False, device='cpu'):
        """fail(problem) if there is one; under DDP every rank stops if any rank has a problem (each one with a
        problem prints it), so that none is left waiting in, or crashing out of, the next collective."""
        from .common import any_rank  # here: the command-line helpers above need no torch
        if any_rank(problem is not None, ddp, device):
            self.fail(problem) if problem is not None else self.exit(2)


def integer(min=None, max=None):
    """type= for an integer flag in [min, max] (either bound optional)."""
    bounds = [f'{op} {v}' for op, v in (('>=', min), ('<=', max)) if v is not None]
    what = 'an integer' + (' ' + ' and '.join(bounds) if bounds else '')

    def parse(text):
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (min is not None and value < min) or (max is not None and value > max):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    parse.__name__ = 'integer'
    return parse


def number(ge=None, gt=None, le=None, lt=None):
    """type= for a finite float in a range given by ge (>=), gt (>), le (<=), lt (<); nan and inf are refused."""
    bounds = [f'{op} {v:g}' for op, v in (('>=', ge), ('>', gt), ('<=', le), ('<', lt)) if v is not None]
    what = 'a finite number' + (' ' + ' and '.join(bounds) if bounds else '')

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (not math.isfinite(value) or (ge is not None and value < ge) or (gt is not None and value <= gt)
                or (le is not None and value > le) or (lt is not None and value >= lt)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    parse.__name__ = 'number'
    return parse


def list_of(item):
    """type= for a comma-separated list of values, each parsed by the type `item` (e.g. --steps 16,32,64)."""
    def parse(text):
        return [item(part) for part in text.split(',')]
    parse.__name__ = f'list of {item.__name__}'
    return parse


def one_of(names, what):
    """type= for a name from `names` (a choice list whose error message lists them, e.g. every --size)."""
    def parse(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; valid: {', '.join(names)}")
        return text
    parse.__name__ = what
    return parse


def batch_size(text):
    """type= for --batch-size: sequences ('256') or tokens with a 'tok' suffix ('524288tok', any case)
    -> (count, 'sequences' | 'tokens'), count >= 1."""
    m = re.fullmatch(r'\s*(\d+)\s*(tok)?\s*', text, flags=re.IGNORECASE)
    if m is None or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"must be a number of sequences >= 1 (e.g. 256) or of tokens with a 'tok' "
                                         f"suffix (e.g. 524288tok), got {text!r}")
    return int(m.group(1)), 'tokens' if m.group(2) else 'sequences'


def removed(instead):
    """add_argument keywords for a flag that no longer exists: hidden from --help, absent from the parsed args, and
    any value is an error that says what to use instead."""
    def parse(text):
        raise argparse.ArgumentTypeError(f"this flag was removed: use {instead}")
    return dict(type=parse, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


DEVICE_PATTERN = r'auto|cpu|mps|cuda(:\d+)?'


def device(text):
    """type= for --device: auto | cpu | cuda | cuda:N | mps (whether it exists is checked by common.init_distributed)."""
    if re.fullmatch(DEVICE_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    return text
