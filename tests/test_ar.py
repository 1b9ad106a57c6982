"""AR family: shifted loss, sampler with and without the KV cache, overfitting.

    python -m pytest -q tests/test_ar.py
"""
import pytest
import torch

from helpers import make_model
from nanodllm import ar


def test_loss_is_the_shifted_nll_computed_by_hand():
    model = make_model()
    x = torch.randint(0, 10, (3, 9))
    nll, n = ar.loss(model, x)
    with torch.no_grad():
        logp = model(x, attn='causal').log_softmax(-1)             # (B, L, V)
    by_hand = -sum(logp[b, i - 1, x[b, i]] for b in range(3) for i in range(1, 9))
    assert n == 3 * 8
    assert abs(nll.item() - by_hand.item()) < 1e-4


def test_sampler_with_cache_equals_sampler_without_and_keeps_the_prompt():
    model = make_model(n_layer=3)
    prompt = torch.tensor([3, 1, 4])
    states = []
    a, nfe_a = ar.sample(model, 4, 12, prompt=prompt, generator=torch.Generator().manual_seed(0),
                         callback=lambda x: states.append(x.clone()))
    b, nfe_b = ar.sample(model, 4, 12, prompt=prompt, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(a, b)
    assert nfe_a == nfe_b == 12 - 3 == len(states)
    assert torch.all(a[:, :3] == prompt)
    assert not (a == model.cfg.mask_id).any()
    # one new token per call, left to right; the callback pads the rest with the mask id
    for i, s in enumerate(states):
        assert (s != model.cfg.mask_id).sum(1).eq(3 + i + 1).all()


def test_sampler_frequencies_follow_the_model_distribution():
    """The first sampled token is drawn from softmax(logits); with temperature -> 0 it is the argmax."""
    model = make_model()
    prompt = torch.tensor([2])
    with torch.no_grad():
        p = model(prompt[None], attn='causal')[0, -1].double().softmax(-1)
    x, _ = ar.sample(model, 20000, 2, prompt=prompt, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(x[:, 1], minlength=p.numel()).double() / 20000
    assert (freq - p).abs().max() < 0.015
    cold, _ = ar.sample(model, 5, 2, prompt=prompt, temperature=1e-6, generator=torch.Generator().manual_seed(2))
    assert torch.all(cold[:, 1] == p.argmax())


def test_loss_drops_when_overfitting_one_batch():
    torch.manual_seed(0)
    model = make_model(randomize=False).train()
    x = torch.randint(0, 10, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        nll, n = ar.loss(model, x)
        loss = nll / n
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.2 and loss.item() < 0.3 * first


def test_prompt_errors():
    model = make_model()
    with pytest.raises(ValueError, match='BOS'):
        ar.sample(model, 1, 8)
    with pytest.raises(ValueError, match='shorter prompt'):
        ar.sample(model, 1, 3, prompt=torch.tensor([1, 2, 3]))
