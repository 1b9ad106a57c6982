"""The bundled tasks (nanodllm/tasks.py): deterministic generators, disjoint splits, unique Sudoku solutions,
worked solutions that compute their answers, scorers against hand-written cases, bad input in one line."""
import itertools
import json
import re

import pytest

from nanodllm import tasks


def test_deterministic_per_seed_and_disjoint_splits():
    for name, params in [('sudoku', {}), ('sudoku', dict(size=6, blanks=14)), ('arith', {}), ('countdown', {})]:
        a = tasks.make_splits(name, 60, 10, 20, seed=3, **params)
        assert a == tasks.make_splits(name, 60, 10, 20, seed=3, **params)
        assert a != tasks.make_splits(name, 60, 10, 20, seed=4, **params)
        prompts = {split: {r['prompt'] for r in records} for split, records in a.items()}
        assert [len(prompts[s]) for s in ('train', 'val', 'test')] == [60, 10, 20]  # distinct inside a split
        for s, t in itertools.combinations(prompts, 2):
            assert not prompts[s] & prompts[t], (name, s, t)
        # the test split does not depend on how many training records are asked for
        assert tasks.make_splits(name, 5, 10, 20, seed=3, **params)['test'] == a['test']


def _brute_force_count(puzzle, size):
    """Solutions by trying every digit in every blank, no pruning beyond a validity check (independent of solve)."""
    br, bc = tasks.BOXES[size]
    cells = [int(c) if c != '.' else 0 for c in puzzle]
    blanks = [i for i, v in enumerate(cells) if not v]

    def valid(g):
        units = [[r * size + c for c in range(size)] for r in range(size)] + \
                [[r * size + c for r in range(size)] for c in range(size)] + \
                [[(R + r) * size + C + c for r in range(br) for c in range(bc)]
                 for R in range(0, size, br) for C in range(0, size, bc)]
        return all(sorted(g[i] for i in u) == list(range(1, size + 1)) for u in units)
    count = 0
    for digits in itertools.product(range(1, size + 1), repeat=len(blanks)):
        g = list(cells)
        for i, d in zip(blanks, digits):
            g[i] = d
        count += valid(g)
    return count


def test_every_sudoku_has_exactly_one_solution():
    for size, blanks in [(4, 10), (6, 18), (9, 40)]:
        n = 30 if size < 9 else 5
        for r in tasks.make_splits('sudoku', n, 0, 0, size=size, blanks=blanks)['train']:
            puzzle, solution = r['prompt'].rstrip('\n'), r['response']
            assert len(puzzle) == size * size and puzzle.count('.') == blanks
            grid = [int(c) if c != '.' else 0 for c in puzzle]
            sols = tasks.solve(grid, size)
            assert len(sols) == 1 and tasks.sudoku_text(sols[0]) == solution
            assert all(p in ('.', s) for p, s in zip(puzzle, solution))  # the givens are the solution's
    # an independent brute force agrees on small 4x4 puzzles (6 blanks: 4^6 fillings each)
    for r in tasks.make_splits('sudoku', 5, 0, 0, size=4, blanks=6)['train']:
        assert _brute_force_count(r['prompt'].rstrip('\n'), 4) == 1
    # and the solver does count two when there are two: a 4x4 with a swappable rectangle of blanks
    two = '..34' '3412' '..43' '4321'   # 12/21 in the top-left of rows 0 and 2 can swap
    assert len(tasks.solve([int(c) if c != '.' else 0 for c in two], 4)) == 2 and _brute_force_count(two, 4) == 2


def _evaluate(expr):
    a, op, b = re.fullmatch(r'(\d+)([-+*/])(\d+)', expr).groups()
    a, b = int(a), int(b)
    return {'+': a + b, '-': a - b, '*': a * b, '/': a / b}[op]


def test_arith_solutions_compute_their_answers():
    for steps in (1, 2, 4):
        for r in tasks.make_splits('arith', 100, 0, 0, steps=steps)['train']:
            calcs = re.findall(r'<<([^=]+)=([^>]+)>>', r['response'])
            assert len(calcs) >= steps
            for expr, value in calcs:
                assert _evaluate(expr) == float(value)
            assert tasks.gsm8k_answer(r['response']) == calcs[-1][1]
            # the question's numbers replayed independently give the same answer
            q = r['prompt']
            x = int(re.match(r'\w+ has (\d+) ', q).group(1))
            for event in re.findall(r'Buys (\d+) packs of (\d+)|Gives away (\d+)|Gets (\d+) more|into (\d+) equal', q):
                k, m, give, get, split = event
                x = x + int(k) * int(m) if k else x - int(give) if give else x + int(get) if get else x / int(split)
            assert float(calcs[-1][1]) == x and x >= 0


def test_sudoku_scorer():
    ref = '1234341221434321'
    assert tasks.score('sudoku', '', ref, ref) == dict(correct=True, cells=1.0)
    assert tasks.score('sudoku', '', ref + '\n', ref)['correct']  # surrounding whitespace is not an error
    one_wrong = '1234341221434322'
    assert tasks.score('sudoku', '', one_wrong, ref) == dict(correct=False, cells=15 / 16)
    assert tasks.score('sudoku', '', '12343412', ref) == dict(correct=False, cells=0.5)   # short: missing cells wrong
    assert tasks.score('sudoku', '', '12x4341221434321', ref) == dict(correct=False, cells=15 / 16)  # malformed
    assert tasks.score('sudoku', '', ref + '5', ref)['correct'] is False                # too long
    assert tasks.score('sudoku', '', '', ref) == dict(correct=False, cells=0.0)


@pytest.mark.parametrize('text, answer', [
    ('so 3+4=<<3+4=7>>7\n#### 7', '7'),
    ('#### 1,234', '1234'),
    ('#### -5', '-5'),
    ('#### 3.50', '3.5'),
    ('#### 18.0', '18'),
    ('#### $1,000.25', '1000.25'),
    ('#### 42 apples', '42'),
    ('#### 42.', '42'),
    ('#### 7\nmore text\n#### 9', '9'),       # the last match wins
    ('no answer here', None),
    ('#### ', None),
    ('#### seven', None),
    ('####7', None),                          # GSM8K's pattern has a space after ####
])
def test_gsm8k_answer(text, answer):
    assert tasks.gsm8k_answer(text) == answer


def test_gsm8k_scorer():
    ref = '2*3=<<2*3=6>>6\n#### 1,006'
    assert tasks.score('gsm8k', 'q', 'whatever\n#### 1006', ref)['correct']
    assert tasks.score('arith', 'q', '#### 1006.00', ref)['correct']
    assert not tasks.score('gsm8k', 'q', '#### 1005', ref)['correct']
    assert not tasks.score('gsm8k', 'q', '1006', ref)['correct']        # no #### line: no answer
    assert not tasks.score('gsm8k', 'q', '#### -1006', ref)['correct']


def test_countdown_scorer():
    prompt = '3,7,12>29\n'
    assert tasks.score('countdown', prompt, '12*3=36,36-7=29', '')['correct']
    assert tasks.score('countdown', prompt, '7*3=21,21+12=33', '')['correct'] is False       # reaches 33, not 29
    assert tasks.score('countdown', prompt, '12*3=36,36-7=28', '')['correct'] is False       # wrong arithmetic
    assert tasks.score('countdown', prompt, '12*3=36,36-8=28', '')['correct'] is False       # 8 is not given
    assert tasks.score('countdown', prompt, '12*3=36', '')['correct'] is False               # 7 unused
    assert tasks.score('countdown', prompt, '12*3=36,36-7=29,', '')['correct'] is False      # malformed
    assert tasks.score('countdown', '4,4,2>4\n', '4/4=1,2*1=2', '')['correct'] is False       # reaches 2
    assert tasks.score('countdown', '4,4,2>4\n', '4/2=2,4*2=8', '')['correct'] is False
    assert tasks.score('countdown', '4,4,2>8\n', '4/2=2,4*2=8', '')['correct']
    assert tasks.score('countdown', '5,2,1>2\n', '5/2=2,2*1=2', '')['correct'] is False       # inexact division
    for r in tasks.make_splits('countdown', 100, 0, 0, numbers=4)['train']:   # every reference solution is valid
        assert tasks.score('countdown', r['prompt'], r['response'], r['response'])['correct']


def test_cli_writes_the_splits(tmp_path, capsys):
    out = tmp_path / 'sudoku'
    tasks.main(['sudoku', '--out', str(out), '--n-train', '7', '--n-val', '2', '--n-test', '3', '--blanks', '5'])
    meta = json.loads((out / 'task.json').read_text())
    assert meta == dict(task='sudoku', params=dict(size=4, blanks=5), seed=0, sizes=dict(test=3, val=2, train=7))
    records = tasks.read_records(out / 'train.jsonl')
    assert records == tasks.make_splits('sudoku', 7, 2, 3, size=4, blanks=5)['train']


@pytest.mark.parametrize('argv, phrase', [
    (['chess'], "unknown task 'chess'; valid: sudoku, arith, countdown"),
    (['sudoku', '--blanks', '13'], '13 blanks cannot be generated at 4x4 with a unique solution; use 0 to 12'),
    (['sudoku', '--grid', '5'], 'size 5 is not one of 4, 6, 9'),
    (['arith', '--steps', '0'], '0 steps cannot be generated'),
    (['countdown', '--numbers', '1'], '1 numbers cannot be generated'),
    (['arith', '--blanks', '3'], "task arith has no parameter 'blanks'"),
    (['countdown', '--numbers', '2', '--max-number', '2', '--n-train', '500'], 'distinct problems found'),
])
def test_bad_input_is_one_line(argv, phrase, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tasks.main(argv + ['--out', str(tmp_path / 'x')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1 and phrase in err, err
