"""The course in tutorials/ cannot drift from the code.

- every lesson script runs in --quick mode and writes the figures its lesson shows (into a temp folder: the committed
  figures are never overwritten), also from a user's checkpoint (--ckpt);
- every `path.py:name` reference in the lessons resolves to a real function or class (a renamed function fails);
- every command in a lesson's "Try this" section parses against the current argparse of the script it names, or of
  the module of `python -m nanodllm.<module>` (it runs only up to its parse_args call), with a valid --family and
  --size;
- every figure a lesson shows is committed and small; every lesson is on the course map.
The checkers are tested too: a planted bad reference, bad flag or bad family makes them report a problem.

    python -m pytest -q tests/test_tutorials.py        # ~2 min on 2 CPU cores: nine lesson scripts in quick mode
"""
import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import os
import re
import runpy
import shlex
import sys
import warnings
from unittest import mock

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(ROOT, 'tutorials')
LESSONS = sorted(f[:-3] for f in os.listdir(TUTORIALS) if re.match(r'\d\d[a-z]?_\w+\.md$', f))
REFERENCE = re.compile(r'((?:[\w.-]+/)*[\w-]+\.py):([A-Za-z_][\w.]*)')
FIGURE = re.compile(r'!\[[^\]]*\]\(([^)\s]+)\)')


def lesson_text(stem):
    with open(os.path.join(TUTORIALS, stem + '.md'), encoding='utf-8') as f:
        return f.read()


# -----------------------------------------------------------------------------
# checker 1: `path.py:name` references

def resolve(path, name):
    """None if `path:name` is a function or class (or a method, `Class.method`), else what is wrong."""
    if path.startswith('nanodllm/'):
        try:
            obj = importlib.import_module(path[:-3].replace('/', '.'))
        except ImportError as e:
            return f"{path}: cannot import ({e})"
        for part in name.split('.'):
            if not hasattr(obj, part):
                return f"{path}:{name}: no {part!r} in {path}"
            obj = getattr(obj, part)
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj)):
            return f"{path}:{name} is a {type(obj).__name__}, not a function or class"
        return None
    file = os.path.join(ROOT, path)  # a script (train.py, tutorials/...): read its definitions without running it
    if not os.path.isfile(file):
        return f"{path}: no such file"
    with open(file, encoding='utf-8') as f:
        body = ast.parse(f.read()).body
    for part in name.split('.'):
        found = [n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part]
        if not found:
            return f"{path}:{name}: no function or class {part!r} in {path}"
        body = found[0].body
    return None


def reference_problems(text):
    refs = sorted(set(REFERENCE.findall(text)))
    return [p for p in (resolve(path, name) for path, name in refs) if p]


# -----------------------------------------------------------------------------
# checker 2: the "Try this" commands

class _Parsed(Exception):
    """Raised by the patched parse_args: the script stops right after parsing its command line."""

    def __init__(self, namespace):
        self.namespace = namespace


def parse_cli(script, argv, module=None):
    """Run `script` (or `python -m module`, whose file is `script`) with argv only up to its parse_args call
    -> (namespace or None, problem or None)."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        self.allow_abbrev = False  # a lesson spells every flag in full: '--temp' must not pass for '--temperature'
        raise _Parsed(original(self, args, namespace))
    err = io.StringIO()
    path = os.path.join(ROOT, script)
    if not os.path.isfile(path):
        return None, f"{script}: no such script"
    with mock.patch.object(argparse.ArgumentParser, 'parse_args', parse_and_stop), \
            mock.patch.object(sys, 'argv', [path] + argv), mock.patch.object(sys, 'path', [TUTORIALS] + sys.path), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if module:  # as `python -m`; the package is imported already, which runpy warns about: harmless here
                with warnings.catch_warnings():
                    warnings.filterwarnings('ignore', message='.*found in sys.modules', category=RuntimeWarning)
                    runpy.run_module(module, run_name='__main__')
            else:
                runpy.run_path(path, run_name='__main__')
        except _Parsed as parsed:
            return parsed.namespace, None
        except SystemExit as e:
            if e.code == 0:  # --help
                return None, None
            return None, f"{script} {' '.join(argv)}: {err.getvalue().strip().splitlines()[-1]}"
    return None, f"{script} ended without parsing a command line"


def try_this_commands(text):
    """The shell commands of the fenced blocks under every 'Try this' heading -> list of token lists."""
    commands, inside, level, fence = [], False, 0, None
    for line in text.splitlines():
        if fence is not None:                                   # inside a fenced block
            if line.strip().startswith('```'):
                if inside and fence in ('', 'bash', 'sh', 'shell'):
                    for command in '\n'.join(block).replace('\\\n', ' ').splitlines():
                        tokens = shlex.split(command, comments=True)
                        if tokens:
                            commands.append(tokens)
                fence = None
            else:
                block.append(line)
            continue
        if line.strip().startswith('```'):
            fence, block = line.strip()[3:].strip(), []
            continue
        heading = re.match(r'(#+) (.*)', line)
        if heading:
            if inside and len(heading.group(1)) <= level:
                inside = False
            if re.search(r'try this', heading.group(2), re.I):
                inside, level = True, len(heading.group(1))
    return commands


def command_problems(text):
    from nanodllm.families import FAMILIES
    from nanodllm.config import SIZES
    problems = []
    commands = try_this_commands(text)
    if not commands:
        problems.append("no command in a 'Try this' section")
    for tokens in commands:
        scripts = [i for i, t in enumerate(tokens) if t.endswith('.py')]
        modules = [i for i, t in enumerate(tokens[:-1]) if t == '-m' and tokens[i + 1].startswith('nanodllm.')]
        if modules:                                   # python -m nanodllm.flops ... -> nanodllm/flops.py
            module, argv = tokens[modules[0] + 1], tokens[modules[0] + 2:]
            namespace, problem = parse_cli(module.replace('.', '/') + '.py', argv, module)
        elif scripts:
            script, argv = tokens[scripts[0]], tokens[scripts[0] + 1:]
            namespace, problem = parse_cli(script, argv)
        else:
            problems.append(f"`{' '.join(tokens)}` runs no script of the repository")
            continue
        if problem:
            problems.append(problem)
        elif namespace is not None:
            if getattr(namespace, 'family', None) is not None and namespace.family not in FAMILIES:
                problems.append(f"{tokens}: unknown --family {namespace.family!r}")
            if getattr(namespace, 'size', None) is not None and namespace.size not in SIZES:
                problems.append(f"{tokens}: unknown --size {namespace.size!r}")
    return problems


# -----------------------------------------------------------------------------
# the lessons

@pytest.mark.parametrize('stem', LESSONS)
def test_references_resolve(stem):
    text = lesson_text(stem)
    assert REFERENCE.search(text), f"{stem}.md cites no function as `nanodllm/file.py:function`"
    assert reference_problems(text) == []


@pytest.mark.parametrize('stem', LESSONS)
def test_try_this_commands_parse(stem):
    assert command_problems(lesson_text(stem)) == []


def test_readme_references_and_course_map():
    with open(os.path.join(TUTORIALS, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    assert reference_problems(readme) == []
    for stem in LESSONS:
        assert f'({stem}.md)' in readme, f"{stem}.md is not linked from tutorials/README.md"
        assert os.path.isfile(os.path.join(TUTORIALS, stem + '.py')), f"{stem}.md has no companion script"


@pytest.mark.parametrize('stem', LESSONS)
def test_figures_are_committed_and_small(stem):
    figures = FIGURE.findall(lesson_text(stem))
    assert figures, f"{stem}.md shows no figure"
    for name in figures:
        path = os.path.join(TUTORIALS, name)
        assert os.path.isfile(path), f"{stem}.md shows {name}, which is not in tutorials/"
        assert 0 < os.path.getsize(path) < 500_000, f"{name} is {os.path.getsize(path)} bytes"


# -----------------------------------------------------------------------------
# the checkers can fail

def test_a_planted_bad_reference_is_caught():
    text = ("`nanodllm/mdlm.py:loss` and `nanodllm/mdlm.py:no_such_function`, `nanodllm/nope.py:loss`, "
            "`nanodllm/noise.py:EPS`, `nanodllm/model.py:Model.no_method`, `train.py:no_such_helper`")
    problems = reference_problems(text)
    assert len(problems) == 5, problems
    assert resolve('nanodllm/model.py', 'Model.forward') is None
    assert resolve('tutorials/lesson_utils.py', 'Text.batch') is None


def test_a_planted_bad_flag_or_family_is_caught():
    good = "## Try this\n\n```bash\npython train.py --family mdlm --max-steps 10  # a comment\n```\n"
    assert command_problems(good) == []
    for bad, what in [('python train.py --family mdlm --no-such-flag 3', 'unrecognized arguments'),
                      ('python train.py --max-steps ten', 'must be an integer'),
                      ('python train.py --family mdml', "unknown family 'mdml'"),
                      ('python tutorials/03_mdlm.py --quick --bogus', 'unrecognized arguments'),
                      ('python sample.py \\\n    --steps 8 --nope', 'unrecognized arguments'),
                      ('python sample.py --temp 0.7', 'unrecognized arguments'),
                      ('python no_such_script.py', 'no such script'),
                      ('python -m nanodllm.flops --size 1.7b --fsdp --bogus', 'unrecognized arguments'),
                      ('python -m nanodllm.flops --size 1.7b --family mdml', "unknown family 'mdml'"),
                      ('python -m nanodllm.nope --x 1', 'no such script'),
                      ('python sweep.py --preset quik', 'invalid choice'),
                      ('ls -la', 'runs no script')]:
        problems = command_problems(good + f"\n### Try this too\n\n```bash\n{bad}\n```\n")
        assert len(problems) == 1 and what in problems[0], (bad, problems)
    # commands outside a "Try this" section are not exercises, and a section with no command is a problem
    assert command_problems("## Run it\n\n```bash\npython train.py --bogus\n```\n" + good) == []
    assert command_problems("## Try this\n\nNothing to run.\n") != []


# -----------------------------------------------------------------------------
# the scripts run (quick mode) and write the figures their lessons show

@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """A shared working directory: the tokenized Shakespeare (data/) is written once, here, not in the repository."""
    return tmp_path_factory.mktemp('lessons')


@contextlib.contextmanager
def chdir(path):  # contextlib.chdir needs Python 3.11
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_lesson(stem, argv, workdir):
    spec = importlib.util.spec_from_file_location(f'lesson_{stem}', os.path.join(TUTORIALS, stem + '.py'))
    module = importlib.util.module_from_spec(spec)
    with mock.patch.object(sys, 'path', [TUTORIALS] + sys.path), chdir(workdir):
        spec.loader.exec_module(module)
        module.main(argv)


@pytest.mark.slow
@pytest.mark.parametrize('stem', LESSONS)
def test_lesson_script_quick(stem, workdir, tmp_path, capsys):
    out = tmp_path / 'figures'
    run_lesson(stem, ['--quick', '--out-dir', str(out)], workdir)
    written = sorted(os.listdir(out))
    for name in FIGURE.findall(lesson_text(stem)):
        assert name in written, f"{stem}.py --quick did not write {name} (wrote {written})"
        with open(out / name, 'rb') as f:
            magic = f.read(6)
        assert magic.startswith(b'\x89PNG') or magic in (b'GIF89a', b'GIF87a'), name
    assert 'wrote' in capsys.readouterr().out


@pytest.mark.slow
def test_lessons_use_a_users_checkpoint(workdir, tmp_path, capsys):
    """--ckpt: a checkpoint as train.py writes it (checkpoint.make_checkpoint) replaces the in-process training; a
    checkpoint of the wrong family is a one-line error with exit code 2."""
    from nanodllm.checkpoint import make_checkpoint, save_checkpoint
    from nanodllm.config import get_config
    from nanodllm.model import Model
    cfg = get_config('nano', 257, 32)
    ckpt = os.path.join(tmp_path, 'ar.pt')
    torch.manual_seed(0)
    save_checkpoint(ckpt, make_checkpoint(Model(cfg), cfg, argparse.Namespace(data='shakespeare'), 'ar', {}, 'byte',
                                          step=0))
    run_lesson('02_ar', ['--quick', '--ckpt', ckpt, '--out-dir', str(tmp_path / 'out')], workdir)
    assert os.path.isfile(tmp_path / 'out' / '02_ar.png')
    with pytest.raises(SystemExit) as e:
        run_lesson('03_mdlm', ['--quick', '--ckpt', ckpt, '--out-dir', str(tmp_path / 'out')], workdir)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and "'ar'" in err[0] and 'mdlm' in err[0]


@pytest.mark.slow
def test_lesson07_draws_a_finished_sweep(workdir, tmp_path, capsys):
    """--sweep-dir: the lesson reads a sweep.py folder (runs.jsonl + each run's results.json) instead of running one,
    fits its curves and checks every run's steps against C / (3 F B L); a folder without runs.jsonl is a one-line
    error."""
    from nanodllm import flops
    from nanodllm.config import get_config
    sweep = tmp_path / 'sweep'
    index = []
    for budget in (1e10, 2e10):
        for size, loss in (('zepto', 3.0), ('atto', 2.9), ('femto', 3.0)):  # U-shaped: AR brackets at both budgets
            cfg = get_config(size, 257, 64)
            steps = flops.steps_for_budget(budget, cfg, 8 * 64)
            name = f"ar_{size}_{budget:g}"
            results = dict(status='completed', family='ar', size=size, tokenizer='byte', seq_len=64, batch_size=8,
                           steps=steps, tokens=steps * 8 * 64, flops_per_token=flops.forward_flops_per_token(cfg),
                           non_embedding_params=flops.non_embedding_params(cfg), val_loss=loss - budget / 1e11,
                           args=dict(flops=budget))
            os.makedirs(sweep / 'runs' / name)
            with open(sweep / 'runs' / name / 'results.json', 'w') as f:
                json.dump(results, f)
            index.append(dict(name=name, family='ar', size=size, budget=budget, status='completed',
                              dir=str(sweep / 'runs' / name), val_loss=results['val_loss'],
                              non_embedding_params=results['non_embedding_params'], tokens=results['tokens']))
    with open(sweep / 'runs.jsonl', 'w') as f:
        f.write(''.join(json.dumps(i) + '\n' for i in index))
    run_lesson('07_scaling', ['--quick', '--sweep-dir', str(sweep), '--out-dir', str(tmp_path / 'out')], workdir)
    out = capsys.readouterr().out
    assert 'steps = C / (3 F B L) in 6 of 6 runs' in out
    assert out.count('ar @ ') == 2 and 'not bracketed' not in out.split('real runs:')[1].split('==')[0]
    assert os.path.isfile(tmp_path / 'out' / '07_isoflop.png')
    with pytest.raises(SystemExit) as e:
        run_lesson('07_scaling', ['--quick', '--sweep-dir', str(tmp_path), '--out-dir', str(tmp_path / 'out')],
                   workdir)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and 'runs.jsonl' in err[0]


@pytest.mark.slow
def test_lesson08_refuses_a_judge_that_is_not_ar_before_training(workdir, tmp_path, capsys):
    from nanodllm.checkpoint import make_checkpoint, save_checkpoint
    from nanodllm.config import get_config
    from nanodllm.model import Model
    cfg = get_config('nano', 257, 32)
    ckpt = os.path.join(tmp_path, 'mdlm.pt')
    save_checkpoint(ckpt, make_checkpoint(Model(cfg), cfg, argparse.Namespace(data='shakespeare'), 'mdlm',
                                          {'loss_type': 'low_var'}, 'byte', step=0))
    with pytest.raises(SystemExit) as e:
        run_lesson('08_quality', ['--quick', '--judge', ckpt, '--work-dir', str(tmp_path / 'work'),
                                  '--out-dir', str(tmp_path / 'out')], workdir)
    assert e.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and 'AR checkpoint' in err[0]
    assert 'train loss' not in captured.out and not os.path.exists(tmp_path / 'work')  # nothing was trained
