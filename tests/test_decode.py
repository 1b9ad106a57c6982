"""Conditional decoding (nanodllm/decode.py and the `given`, `order`, `block_size` arguments of every sampler).

- given tokens are never changed (every family and order, prefix, infill gaps, random masks, blocks, temperatures);
  the `given` tensor of a prefix gives exactly the `prompt` sample; AR refuses an infill, Duo and AR refuse orders;
- temperature 0 is greedy in every family (a stub network with fixed logits: the output is their argmax);
- confidence / margin orders commit positions in exactly the stub's order, per row, never over the batch;
- block_size=1 decodes strictly left to right, one call per token with steps=1; KV cache = no cache;
- cut_at_eos cuts after the given positions.

Run: cd /work/main && python -m pytest -q tests/test_decode.py
"""
import pytest
import torch

from helpers import make_model
from nanodllm import ar, decode, duo, eso, mdlm

V, L = 11, 10
MASK = V - 1
FREE = decode.FREE
FAMILY = dict(ar=ar, mdlm=mdlm, duo=duo, eso=eso)
ORDERS = dict(ar=['random'], duo=['random'], mdlm=list(decode.ORDERS), eso=list(decode.ORDERS))


def patterns(n=3, seed=0):
    """Named `given` tensors (n, L): a prefix, an infill (prefix, gap, suffix), random masks (other counts per row)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V - 1, (n, L), generator=g)
    prefix = torch.full((n, L), FREE)
    prefix[:, :3] = tokens[:, :3]
    infill = prefix.clone()
    infill[:, 7:] = tokens[:, 7:]
    rand = torch.where(torch.rand(n, L, generator=g) < 0.4, tokens, torch.full_like(tokens, FREE))
    rand[:, 0] = tokens[:, 0]
    rand[0, -1] = FREE
    ragged = torch.full((n, L), FREE)                            # prefixes of different lengths (AR accepts them)
    for b in range(n):
        ragged[b, :2 + b] = tokens[b, :2 + b]
    return dict(prefix=prefix, ragged=ragged, infill=infill, random=rand)


def draw(family, model, given, order='random', block_size=None, steps=None, temperature=1.0, seed=0, **kw):
    return FAMILY[family].sample(model, given.size(0), L, steps=steps, given=given, order=order,
                                 block_size=block_size, temperature=temperature,
                                 generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize('family', list(FAMILY))
def test_given_tokens_are_never_changed(family):
    model = make_model(vocab_size=V, seq_len=L)
    for name, given in patterns().items():
        if family == 'ar' and name in ('infill', 'random'):
            continue
        for order in ORDERS[family]:
            for block_size, steps in [(None, 4), (3, 2), (1, 1)]:
                for temperature in (1.0, 0.0):
                    states = []
                    x, nfe = draw(family, model, given, order, block_size, steps, temperature,
                                  callback=lambda s: states.append(s.clone()))
                    fixed = given != FREE
                    case = (name, order, block_size, temperature)
                    assert x.shape == given.shape and torch.equal(x[fixed], given[fixed]), case
                    assert not (x == MASK).any() and (x >= 0).all(), case
                    assert states and all(torch.equal(s[fixed], given[fixed]) for s in states), case
                    if block_size == 1 and steps == 1:  # one call per free position
                        assert nfe == calls_one_per_token(family, fixed), case


def calls_one_per_token(family, fixed):
    """Network calls of block_size=1, steps=1: AR from the shortest prefix on; the others one per position that is
    free in some row (Eso-LM too: a row whose position is given there writes it in that block's slot)."""
    if family == 'ar':
        return L - int(fixed.long().cumprod(1).sum(1).min())
    return int((~fixed).any(0).sum())


@pytest.mark.parametrize('family', list(FAMILY))
def test_given_prefix_equals_prompt(family):
    """A prefix passed as `given` is the `prompt` sampler, draw for draw (the default path is unchanged)."""
    model = make_model(vocab_size=V, seq_len=L)
    prompt = torch.tensor([3, 1, 4])
    given = torch.full((2, L), FREE)
    given[:, :3] = prompt
    a = FAMILY[family].sample(model, 2, L, steps=5, prompt=prompt, generator=torch.Generator().manual_seed(1))
    b = FAMILY[family].sample(model, 2, L, steps=5, given=given, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_refusals_are_one_line():
    model = make_model(vocab_size=V, seq_len=L)
    infill = patterns()['infill']
    with pytest.raises(ValueError, match='infill'):
        ar.sample(model, 3, L, given=infill)
    for family in (ar, duo):
        with pytest.raises(ValueError, match="use order='random'"):
            family.sample(model, 3, L, given=patterns()['prefix'], order='confidence')
    for family in FAMILY.values():
        with pytest.raises(ValueError, match='order must be one of'):
            family.sample(model, 3, L, given=patterns()['prefix'], order='left')
        with pytest.raises(ValueError, match='given must be an integer tensor'):
            family.sample(model, 3, L, given=infill[:, :-1])
        with pytest.raises(ValueError, match='leave at least one position free'):
            family.sample(model, 3, L, given=torch.zeros(3, L, dtype=torch.long))
        with pytest.raises(ValueError, match='mask id'):
            family.sample(model, 3, L, given=infill.masked_fill(infill == FREE, MASK))
        with pytest.raises(ValueError, match='block_size'):
            family.sample(model, 3, L, given=patterns()['prefix'], block_size=0)


class Fixed(torch.nn.Module):
    """A stub network whose logits do not depend on the input: table (n, L, V) by row and ORIGINAL position (the
    `pos` Eso-LM passes), mask logit -1e6. Records nothing; AR reads the row of the last input position."""

    def __init__(self, table):
        super().__init__()
        self.table, self.cfg = table, make_model(vocab_size=V, seq_len=L).cfg
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def new_cache(self, capacity=None):
        return None

    def forward(self, idx, sigma=None, attn='full', pos=None, cache=None, keep=None, rows=None):
        n, T = idx.shape
        pos = torch.arange(T).expand(n, T) if pos is None else pos.expand(n, T)
        out = self.table[:n].gather(1, pos[..., None].expand(-1, -1, V)).clone()
        out[..., MASK] = -1e6
        return out if rows is None else out[:, rows]


def stub_table(n=3, seed=0):
    return torch.randn(n, L, V, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize('family', list(FAMILY))
def test_temperature_zero_is_greedy(family):
    table = stub_table()
    model = Fixed(table)
    best = table[..., :MASK].argmax(-1)                                            # (n, L)
    given = patterns()['prefix']
    free = given == FREE
    for order in ORDERS[family]:
        for block_size in (None, 2):
            kw = dict(use_cache=False) if family == 'ar' else {}
            x, _ = draw(family, model, given, order, block_size, steps=3, temperature=0.0, **kw)
            if family == 'ar':                                                     # row i - 1 predicts token i
                assert torch.equal(x[:, 3:], best[:, 2:-1]), order
            else:
                assert torch.equal(x[free], best[free]), (order, block_size)


def commit_order(states, given):
    """The step at which each position was first decoded (AR, MDLM, Eso-LM: masks in the callback states)."""
    when = torch.full(given.shape, -1)
    for i, s in enumerate(states):
        new = (s != MASK) & (when < 0) & (given == FREE)
        when[new] = i
    return when


def confidences(table, order):
    p = table[..., :MASK].double().softmax(-1)                         # the stub's mask logit is -1e6
    top = p.topk(2, dim=-1).values
    return top[..., 0] if order == 'confidence' else top[..., 0] - top[..., 1]


@pytest.mark.parametrize('family', ['mdlm', 'eso'])
@pytest.mark.parametrize('order', ['confidence', 'margin'])
def test_confidence_orders_commit_in_the_stub_order_per_row(family, order):
    """One position per call: each row commits its free positions in decreasing confidence of ITS OWN logits (the
    rows' orders differ; a top-k over the flattened batch would commit a row's positions in a batch-wide order and
    several per call in one row). Then three per call: the sets are each row's top-3, top-6, top-9."""
    table = stub_table(seed=1)
    table[:, :, 0] += torch.linspace(0, 4, L)                          # confidence and margin orders differ...
    table[:, :, 1] += torch.linspace(0, 4, L).flip(0) * torch.tensor([0.0, 1.0, 1.2])[:, None]  # ... and rows too
    model = Fixed(table)
    given = torch.full((3, L), FREE)
    given[:, 0] = 2
    score = confidences(table, order)
    kw = dict(alpha0=0.0) if family == 'eso' else dict(steps=L - 1)   # Eso-LM: alpha0 = 0 is one token per call
    states = []
    x, nfe = draw(family, model, given, order, callback=lambda s: states.append(s.clone()), **kw)
    assert nfe == L - 1
    when = commit_order(states, given)
    for b in range(3):
        expected = score[b, 1:].argsort(descending=True) + 1
        assert torch.equal(when[b, 1:].argsort() + 1, expected), b
    orders = [tuple((when[b, 1:].argsort() + 1).tolist()) for b in range(3)]
    assert len(set(orders)) == 3                                       # the stub's rows really disagree
    if family == 'mdlm':
        states = []
        draw(family, model, given, order, steps=3, callback=lambda s: states.append(s.clone()))
        for i, s in enumerate(states):
            for b in range(3):
                top = set((score[b, 1:].argsort(descending=True)[:3 * (i + 1)] + 1).tolist())
                assert set(((s[b] != MASK) & (given[b] == FREE)).nonzero()[:, 0].tolist()) == top


@pytest.mark.parametrize('family', list(FAMILY))
def test_block_size_one_decodes_left_to_right(family):
    model = make_model(vocab_size=V, seq_len=L)
    given = patterns()['infill']
    if family == 'ar':
        given = patterns()['prefix']
    free = given == FREE
    for order in ORDERS[family]:
        states = []
        x, nfe = draw(family, model, given, order, block_size=1, steps=1,
                      callback=lambda s: states.append(s.clone()))
        assert nfe == len(states) == int(free[0].sum())
        positions = free[0].nonzero()[:, 0].tolist()
        for j, s in zip(positions, states):                            # after call i, position j_i is final
            assert torch.equal(s[:, :j + 1], x[:, :j + 1]), (order, j)
            if family != 'duo':                                        # ... and the later free ones still masks
                later = free[:, j + 1:]
                assert (s[:, j + 1:][later] == MASK).all()


def test_eso_cache_equals_no_cache_with_given_and_orders():
    model = make_model(vocab_size=V, seq_len=L)
    for name, given in patterns().items():
        for order in decode.ORDERS:
            for block_size in (None, 3):
                for alpha0 in (1.0, 0.5):
                    a = draw('eso', model, given, order, block_size, steps=3, alpha0=alpha0, use_cache=True)
                    b = draw('eso', model, given, order, block_size, steps=3, alpha0=alpha0, use_cache=False)
                    assert torch.equal(a[0], b[0]) and a[1] == b[1], (name, order, block_size, alpha0)


def test_cut_at_eos():
    EOS = 0
    x = torch.tensor([[5, 0, 3, 0, 7],       # prompt [5, 0] holds an EOS: cut at the next one
                      [5, 1, 3, 4, 2],       # no EOS: whole row
                      [5, 1, 0, 0, 0]])      # EOS padding
    given = torch.full((3, 5), FREE)
    given[:, :2] = x[:, :2]
    assert decode.cut_at_eos(x, EOS, given) == [[5, 0, 3], [5, 1, 3, 4, 2], [5, 1]]
    assert decode.cut_at_eos(x, EOS) == [[5], [5, 1, 3, 4, 2], [5, 1]]
    infill = given.clone()
    infill[:, 4] = x[:, 4]                    # a fixed suffix: nothing after it to cut
    assert decode.cut_at_eos(x, EOS, infill) == x.tolist()


def test_select_and_split_counts():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.9, 0.1, 0.5, 0.7]])
    cand = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert decode.select(score, cand, torch.tensor([2, 1])).tolist() == [[False, True, True, False],
                                                                         [True, False, False, False]]
    counts = decode.split_counts(torch.tensor([7, 2, 0]), 3)
    assert counts.tolist() == [[3, 1, 0], [2, 1, 0], [2, 0, 0]]


def test_eso_ragged_prompts_decode_in_one_batch():
    """Prompts of different lengths run as one batch (the cache needs aligned slots: a row with a longer prompt
    writes its extra prompt tokens into the first free slots, clean, never drawn). Greedy, one token per call: every
    row is exactly that row decoded alone (its given tokens are seen by its masks). One block: nfe is the unmask
    schedule's length, as for aligned rows, and the most-free row (no extra tokens) is again itself alone."""
    model = make_model(vocab_size=V, seq_len=L)
    given = patterns()['ragged']                                       # prefixes of 2, 3, 4 tokens
    x, nfe = draw('eso', model, given, block_size=1, steps=1, temperature=0.0)
    assert nfe == L - 2
    for b in range(3):
        alone, calls = draw('eso', model, given[b:b + 1], block_size=1, steps=1, temperature=0.0)
        assert torch.equal(x[b], alone[0]) and calls == L - 2 - b, b
    for order in decode.ORDERS:
        x, nfe = draw('eso', model, given, order, steps=4, temperature=0.0)
        assert nfe <= 4 and torch.equal(x[given != FREE], given[given != FREE]), order
        alone, _ = draw('eso', model, given[:1], order, steps=4, temperature=0.0)
        assert torch.equal(x[0], alone[0]), order


def test_eso_ragged_prompt_tokens_come_before_every_mask():
    """In every call (no cache: the whole sorted prefix is the input), each row's given positions all sit at slots
    before its first mask, so every mask attends to the whole prompt, whatever the prompt's length."""
    model = make_model(vocab_size=V, seq_len=L)
    given = patterns()['ragged']
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg, self.inner = model.cfg, model

        def forward(self, idx, **kw):
            calls.append((idx.clone(), kw['pos'].clone()))
            return self.inner(idx, **kw)

    for order in decode.ORDERS:
        for alpha0 in (1.0, 0.5):
            calls.clear()
            draw('eso', Spy(), given, order, steps=3, alpha0=alpha0, use_cache=False)
            assert calls, order
            for idx, pos in calls:
                for b in range(3):
                    if not (idx[b] == MASK).any():                     # only extra prompt tokens in this call
                        continue
                    seen = set(pos[b, :int((idx[b] == MASK).nonzero()[0])].tolist())
                    assert set((given[b] != FREE).nonzero()[:, 0].tolist()) <= seen, (order, alpha0, b)
