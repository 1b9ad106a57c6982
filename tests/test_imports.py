"""The package's import graph: no module of nanodllm imports, directly or through others, a module that imports it
back (function-level imports included: a circle hidden inside a function is still a circle), and names live in one
place (no re-exports for old import paths).

    python -m pytest -q tests/test_imports.py          # < 1 s
"""
import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_graph():
    """-> {module: set of nanodllm modules it imports anywhere in its source}, read from the `from . import x`,
    `from .x import y`, `from nanodllm.x import y` and `import nanodllm.x` statements."""
    graph = {}
    for path in glob.glob(os.path.join(ROOT, 'nanodllm', '*.py')):
        name, deps = os.path.basename(path)[:-3], set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split('.')[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('nanodllm'):
                deps |= {node.module.split('.')[1]} if '.' in node.module else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split('.')[1] for a in node.names if a.name.startswith('nanodllm.')}
        graph[name] = deps - {name}
    return graph


def find_cycle(graph):
    """-> one import circle as a list [a, b, ..., a], or None (depth-first search, colouring the modules)."""
    state, stack = {}, []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 'open':
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 'done'
        stack.pop()
        return None
    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_nanodllm_has_no_import_circle():
    graph = import_graph()
    assert {'checkpoint', 'common', 'families', 'quality', 'pareto'} <= set(graph)
    assert 'families' in graph['checkpoint'] and 'common' not in graph['checkpoint']
    assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_no_reexports_for_old_import_paths():
    import nanodllm.common
    for name in ('load_checkpoint', 'make_checkpoint', 'save_checkpoint', 'FAMILIES', 'FAMILY_NAMES', 'get_family'):
        assert not hasattr(nanodllm.common, name), name
    assert not os.path.exists(os.path.join(ROOT, 'nanodllm', 'evaluate.py'))
