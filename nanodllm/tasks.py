"""Bundled offline reasoning tasks (spec sft.md §4): generated deterministically from a seed, written as the
prompt/response `.jsonl` records the fine-tuning path reads, with disjoint train/val/test splits and a scorer each.

  sudoku     a puzzle with exactly one solution (the solver counts solutions up to 2 to prove it) -> its solution.
             Text: the cells row-major, digits 1..size, '.' for a blank, no separators ('1.3...' = 16 cells at 4x4).
             Scores: exact match of the grid (`correct`) and the fraction of the size^2 cells right (`cells`).
  arith      GSM8K-format word problems: a few steps of + - * / on small integers, a worked solution with GSM8K's
             calculator annotations (`3*5=<<3*5=15>>15`) ending in `#### N`. Scored like real GSM8K (gsm8k_answer:
             the last `#### (.*)$`, commas and '$' dropped, the first number of it, decimals normalised), so a user's
             own GSM8K test file is scored by the same code (score('gsm8k', ...)).
  countdown  reach a target from k numbers with + - * / (every number used exactly once, exact integer steps).
             Text: prompt '3,7,12>33\n', response '12*3=36,36-7=29,...' (one step a comma, Ye et al.'s form); any
             valid solution counts, not only the reference one: the scorer checks the arithmetic. The target is
             given first, so a left-to-right decoder must plan its first step for a result it has not written yet.

Splits come from one seeded stream of distinct problems (distinct prompts): test first, then val, then train, so the
test split does not change when --n-train does. Every prompt ends with '\n' (the boundary the decoder starts after).

    python -m nanodllm.tasks sudoku --out data/sudoku --grid 4 --blanks 6 --n-train 2000 --n-test 200
    python -m nanodllm.tasks countdown --out data/countdown --numbers 3 --max-number 10
    python -m nanodllm.tasks arith --out data/arith --steps 2
"""
import json
import os
import random
import re
from decimal import Decimal, InvalidOperation

from nanodllm import cli

# -----------------------------------------------------------------------------
# sudoku: a bitmask backtracking solver (fewest candidates first) that is also the generator of full grids

BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}   # size -> (rows, columns) of a box
MIN_CLUES = {4: 4, 6: 8, 9: 17}             # the fewest givens any uniquely solvable puzzle of that size has


def solve(grid, size, limit=2, rng=None):
    """Solutions of `grid` (a list of size^2 ints, 0 = blank), at most `limit` of them; with `rng` the digits are
    tried in a random order (on an empty grid: a random full grid). len(solve(g, n)) == 1 proves g is unique."""
    br, bc = BOXES[size]
    rows, cols, boxes = [0] * size, [0] * size, [0] * size
    box = [(r // br) * (size // bc) + c // bc for r in range(size) for c in range(size)]
    grid = list(grid)
    for i, v in enumerate(grid):
        if v:
            bit, (r, c) = 1 << (v - 1), divmod(i, size)
            if (rows[r] | cols[c] | boxes[box[i]]) & bit:
                return []  # the givens already clash
            rows[r] |= bit; cols[c] |= bit; boxes[box[i]] |= bit
    full, out = (1 << size) - 1, []

    def search():
        best, best_free = -1, None
        for i, v in enumerate(grid):  # the blank with the fewest candidates
            if not v:
                r, c = divmod(i, size)
                free = full & ~(rows[r] | cols[c] | boxes[box[i]])
                if best < 0 or bin(free).count('1') < bin(best_free).count('1'):
                    best, best_free = i, free
                    if not free:
                        return
        if best < 0:
            out.append(list(grid))
            return
        r, c = divmod(best, size)
        digits = [d for d in range(1, size + 1) if best_free >> (d - 1) & 1]
        if rng is not None:
            rng.shuffle(digits)
        for d in digits:
            bit = 1 << (d - 1)
            grid[best] = d; rows[r] |= bit; cols[c] |= bit; boxes[box[best]] |= bit
            search()
            grid[best] = 0; rows[r] &= ~bit; cols[c] &= ~bit; boxes[box[best]] &= ~bit
            if len(out) >= limit:
                return
    search()
    return out


def sudoku_text(grid):
    return ''.join(str(v) if v else '.' for v in grid)


def sudoku_check(size, blanks):
    if size not in BOXES:
        raise ValueError(f"sudoku: size {size} is not one of {', '.join(map(str, BOXES))}")
    if not 0 <= blanks <= size * size - MIN_CLUES[size]:
        raise ValueError(f"sudoku: {blanks} blanks cannot be generated at {size}x{size} with a unique solution; "
                         f"use 0 to {size * size - MIN_CLUES[size]} blanks")


def sudoku(rng, size=4, blanks=8):
    """A (prompt, response) pair: a puzzle with `blanks` blanks and exactly one solution, and that solution. Blanks
    are removed in a random order, each kept only if the solution stays unique; a grid that gets stuck is redrawn."""
    sudoku_check(size, blanks)
    n = size * size
    for _ in range(50):
        solution = solve([0] * n, size, limit=1, rng=rng)[0]
        puzzle, removed = list(solution), 0
        for i in rng.sample(range(n), n):
            if removed == blanks:
                break
            puzzle[i] = 0
            if len(solve(puzzle, size)) == 1:
                removed += 1
            else:
                puzzle[i] = solution[i]
        if removed == blanks:
            return sudoku_text(puzzle) + '\n', sudoku_text(solution)
    raise ValueError(f"sudoku: could not generate {size}x{size} puzzles with {blanks} blanks and a unique solution "
                     f"(50 grids tried); use fewer blanks")


def score_sudoku(prompt, prediction, reference):
    """correct: the predicted grid equals the solution (unique, so no other grid is right); cells: the fraction of
    the solution's cells matched position by position (a short or malformed prediction counts missing cells wrong)."""
    pred = prediction.strip()
    cells = sum(a == b for a, b in zip(pred, reference)) / len(reference)
    return dict(correct=pred == reference, cells=cells)


# -----------------------------------------------------------------------------
# arith: GSM8K-format multi-step word problems

NAMES = ['Ann', 'Ben', 'Cara', 'Dev', 'Eli', 'Fay', 'Gus', 'Hana', 'Ivo', 'Jo', 'Kim', 'Lea', 'Max', 'Nia', 'Omar']
ITEMS = ['apples', 'pens', 'cards', 'books', 'eggs', 'coins', 'shells', 'stamps', 'marbles', 'cups']
MAX_STEPS = 6


def _calc(a, op, b):
    c = {'+': a + b, '-': a - b, '*': a * b, '/': a // b}[op]
    return c, f"{a}{op}{b}=<<{a}{op}{b}={c}>>{c}"


def arith(rng, steps=2, max_number=10):
    """A GSM8K-format (question, worked solution) pair: a start count, then `steps` events (buy packs, give away,
    get more, share equally), each one line of the solution with the calculator annotation, then `#### N`."""
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"arith: {steps} steps cannot be generated; use 1 to {MAX_STEPS}")
    if max_number < 2:
        raise ValueError(f"arith: --max-number {max_number} is too small to generate problems; use >= 2")
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(2, max_number)
    question, lines = [f"{name} has {x} {item}."], []
    for _ in range(steps):
        kind = rng.choice(['buy', 'give', 'get', 'share'])
        if kind == 'give' and x < 2 or kind == 'share' and not [k for k in range(2, max_number + 1) if x % k == 0]:
            kind = 'get'
        if kind == 'buy':
            k, m = rng.randint(2, max_number), rng.randint(2, max_number)
            p, line1 = _calc(k, '*', m)
            x, line2 = _calc(x, '+', p)
            question.append(f"Buys {k} packs of {m}.")
            lines += [line1, line2]
        elif kind == 'give':
            g = rng.randint(1, min(x - 1, max_number))
            x, line = _calc(x, '-', g)
            question.append(f"Gives away {g}.")
            lines.append(line)
        elif kind == 'get':
            g = rng.randint(1, max_number)
            x, line = _calc(x, '+', g)
            question.append(f"Gets {g} more.")
            lines.append(line)
        else:
            k = rng.choice([k for k in range(2, max_number + 1) if x % k == 0])
            x, line = _calc(x, '/', k)
            question.append(f"Splits them into {k} equal parts, keeps one.")
            lines.append(line)
    question.append(f"How many {item} now?")
    return ' '.join(question) + '\n', '\n'.join(lines) + f"\n#### {x}"


def gsm8k_answer(text):
    """The answer of a GSM8K solution as real GSM8K evaluation reads it: the last line matching `#### (.*)$`, commas
    and '$' removed, the first number in it, normalised ('1,000.50' -> '1000.5', '-3.0' -> '-3'); None if none."""
    matches = re.findall(r'#### (.*)$', text, flags=re.MULTILINE)
    if not matches:
        return None
    number = re.search(r'-?\d+(?:\.\d+)?', matches[-1].replace(',', '').replace('$', ''))
    if number is None:
        return None
    try:
        value = Decimal(number.group(0)).normalize()
    except InvalidOperation:
        return None
    text = format(value, 'f')
    return '0' if text in ('-0', '') else text


def score_gsm8k(prompt, prediction, reference):
    """correct: the predicted answer (gsm8k_answer) exists and equals the reference's."""
    pred, ref = gsm8k_answer(prediction), gsm8k_answer(reference)
    return dict(correct=pred is not None and pred == ref)


# -----------------------------------------------------------------------------
# countdown

def countdown(rng, numbers=3, max_number=10, max_target=100):
    """A (prompt, reference solution) pair: `numbers` integers in 1..max_number and a target in 1..max_target that
    a random sequence of steps (two of the pool -> one result, exact, never negative) reaches using all of them."""
    if not 2 <= numbers <= 6:
        raise ValueError(f"countdown: {numbers} numbers cannot be generated; use 2 to 6")
    if max_number < 2 or max_target < 2:
        raise ValueError("countdown: --max-number and the target range must be >= 2 to generate problems")
    for _ in range(1000):
        nums = [rng.randint(1, max_number) for _ in range(numbers)]
        pool, steps = list(nums), []
        while len(pool) > 1:
            a, b = sorted((pool.pop(rng.randrange(len(pool))), pool.pop(rng.randrange(len(pool)))), reverse=True)
            ops = ['+', '*'] + (['-'] if a > b else []) + (['/'] if b > 1 and a % b == 0 else [])
            op = rng.choice(ops)
            c = {'+': a + b, '-': a - b, '*': a * b, '/': a // b}[op]
            steps.append(f"{a}{op}{b}={c}")
            pool.append(c)
        if 1 <= pool[0] <= max_target and pool[0] not in nums:
            return f"{','.join(map(str, nums))}>{pool[0]}\n", ','.join(steps)
    raise ValueError(f"countdown: no target in 1..{max_target} was reached from {numbers} numbers <= {max_number}; "
                     f"raise the target range")


def score_countdown(prompt, prediction, reference):
    """correct: the prediction is a valid solution of the prompt: steps `a op b = c`, each a and b taken from the
    pool (the given numbers and earlier results), each c right (division exact), and the pool ends as the target."""
    m = re.fullmatch(r'([\d,]+)>(\d+)\s*', prompt)
    if m is None:
        raise ValueError(f"countdown: malformed prompt {prompt!r}")
    pool, target = [int(v) for v in m.group(1).split(',')], int(m.group(2))
    for step in prediction.strip().split(','):
        s = re.fullmatch(r'(\d+)([-+*/])(\d+)=(\d+)', step)
        if s is None:
            return dict(correct=False)
        a, op, b, c = int(s.group(1)), s.group(2), int(s.group(3)), int(s.group(4))
        if a not in pool or (pool.remove(a) or b not in pool):
            return dict(correct=False)
        pool.remove(b)
        if op == '/' and (b == 0 or a % b):
            return dict(correct=False)
        if c != {'+': a + b, '-': a - b, '*': a * b, '/': a // b if b else None}[op]:
            return dict(correct=False)
        pool.append(c)
    return dict(correct=pool == [target])


# -----------------------------------------------------------------------------
# the registry, splits, files

# name -> (generator or None, scorer, default parameters). 'gsm8k' is a user's GSM8K file: no generator, its scorer.
TASKS = {
    'sudoku': (sudoku, score_sudoku, dict(size=4, blanks=8)),
    'arith': (arith, score_gsm8k, dict(steps=2, max_number=10)),
    'countdown': (countdown, score_countdown, dict(numbers=3, max_number=10, max_target=100)),
    'gsm8k': (None, score_gsm8k, {}),
}
GENERATED = [name for name, (gen, _, _) in TASKS.items() if gen is not None]


def get_task(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def params_of(name, **overrides):
    """The task's default parameters with `overrides` (None values ignored); an unknown parameter is an error."""
    _, _, defaults = get_task(name)
    extra = [k for k, v in overrides.items() if v is not None and k not in defaults]
    if extra:
        raise ValueError(f"task {name} has no parameter {extra[0]!r}; its parameters: {', '.join(defaults) or 'none'}")
    return dict(defaults, **{k: v for k, v in overrides.items() if v is not None})


def make_splits(name, n_train, n_val, n_test, seed=0, **params):
    """{'test': [...], 'val': [...], 'train': [...]} of records {'prompt', 'response'}: distinct prompts drawn from one
    stream seeded by (name, params, seed), test first, then val, then train (test is stable when n_train changes)."""
    gen, _, _ = get_task(name)
    if gen is None:
        raise ValueError(f"task {name!r} is a file format, not generated: pass your own .jsonl")
    params = params_of(name, **params)
    rng = random.Random(f"{name}:{json.dumps(params, sort_keys=True)}:{seed}")
    seen, splits = set(), {}
    for split, n in (('test', n_test), ('val', n_val), ('train', n_train)):
        records, misses = [], 0
        while len(records) < n:
            prompt, response = gen(rng, **params)
            if prompt in seen:
                misses += 1
                if misses > 1000 + 10 * n:
                    raise ValueError(f"{name}: only {len(seen)} distinct problems found with {params}; ask for "
                                     f"fewer records or a harder setting")
                continue
            seen.add(prompt)
            records.append(dict(prompt=prompt, response=response))
        splits[split] = records
    return splits


def score(name, prompt, prediction, reference):
    """The task's scorer on one record: a dict with `correct` (bool) and task extras (sudoku: `cells`)."""
    return get_task(name)[1](prompt, prediction, reference)


def write_task(out_dir, name, n_train, n_val, n_test, seed=0, **params):
    """Writes <out_dir>/{train,val,test}.jsonl and task.json (name, parameters, seed, sizes) -> the task.json dict."""
    splits = make_splits(name, n_train, n_val, n_test, seed, **params)
    os.makedirs(out_dir, exist_ok=True)
    for split, records in splits.items():
        with open(os.path.join(out_dir, f'{split}.jsonl'), 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in records)
    meta = dict(task=name, params=params_of(name, **params), seed=seed,
                sizes={split: len(records) for split, records in splits.items()})
    with open(os.path.join(out_dir, 'task.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


def read_records(path):
    """A .jsonl file -> records {'prompt', 'response'} (GSM8K's question/answer read as such, question + '\\n')."""
    out = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            if line.strip():
                r = json.loads(line)
                if 'prompt' in r and 'response' in r:
                    out.append(dict(prompt=r['prompt'], response=r['response']))
                elif 'question' in r and 'answer' in r:  # GSM8K: no separator in the fields (as records.py)
                    out.append(dict(prompt=r['question'] + '\n', response=r['answer']))
                else:
                    raise ValueError(f"{path}:{k}: a record needs prompt/response (or GSM8K's question/answer) fields")
    return out


def main(argv=None):
    p = cli.ArgumentParser(description='Write a bundled task as prompt/response .jsonl splits (train, val, test).')
    p.add_argument('task', type=cli.one_of(GENERATED, 'task'))
    p.add_argument('--out', required=True, help='folder for train.jsonl, val.jsonl, test.jsonl, task.json')
    p.add_argument('--n-train', type=cli.integer(min=0), default=2000)
    p.add_argument('--n-val', type=cli.integer(min=0), default=200)
    p.add_argument('--n-test', type=cli.integer(min=0), default=200)
    p.add_argument('--seed', type=cli.integer(min=0), default=0)
    p.add_argument('--grid', type=cli.integer(min=1), help='sudoku: the grid size, 4, 6 or 9')
    p.add_argument('--blanks', type=cli.integer(min=0), help='sudoku: blank cells per puzzle')
    p.add_argument('--steps', type=cli.integer(min=0), help='arith: events per problem')
    p.add_argument('--numbers', type=cli.integer(min=0), help='countdown: numbers per problem')
    p.add_argument('--max-number', type=cli.integer(min=0), help='arith, countdown: the largest number drawn')
    p.add_argument('--max-target', type=cli.integer(min=0), help='countdown: the largest target')
    a = p.parse_args(argv)
    try:
        params = params_of(a.task, size=a.grid, blanks=a.blanks, steps=a.steps, numbers=a.numbers,
                           max_number=a.max_number, max_target=a.max_target)
        meta = write_task(a.out, a.task, a.n_train, a.n_val, a.n_test, a.seed, **params)
    except ValueError as e:
        p.fail(e)
    print(f"wrote {a.out}/: " + ', '.join(f"{k}.jsonl ({v})" for k, v in meta['sizes'].items())
          + f"; {a.task} {meta['params']}, seed {a.seed}")


if __name__ == '__main__':
    main()
