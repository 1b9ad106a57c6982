"""The memory planner (nanodllm/memory.py) against what a small model really holds on CPU, and activation
checkpointing against the plain backward.

    python -m pytest -q tests/test_memory.py

The activation ledger is a model of today's model.py and family losses; when either changes what it saves (a fused
loss, another attention kernel, a different dtype), the measured-vs-planned tests below fail and the ledger in
memory.py needs the same change.
"""
import contextlib
import os
import subprocess
import sys

import pytest
import torch
from helpers import make_model

from nanodllm import ar, memory
from nanodllm.families import get_family
from nanodllm.config import ModelConfig, get_config
from nanodllm.model import Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = {'ar': ('ar', {}), 'mdlm': ('mdlm', {}), 'duo': ('duo', {}), 'eso': ('eso', {}),
            'eso-seq': ('eso', {'alpha0': 0.5, 'batch_split': 0.5})}  # name -> family, options
STRATA = (99, 100)   # t in [0.99, 1]: Eso-LM masks ~99.5% of the tokens, the planner's worst case (mask_fraction 1)
B, L = 4, 64


def small_model(vocab_size=1025, n_layer=2, n_embd=64):
    torch.manual_seed(0)
    return Model(ModelConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=4, n_embd=n_embd, seq_len=L))


@pytest.fixture(scope='module')
def model():
    """V = 1025, d = 64: the loss's V-wide tensors weigh about as much as the blocks, as at 1.7B with GPT-2's
    vocabulary, where they set the peak."""
    return small_model()


@pytest.fixture(scope='module', params=['loss-heavy', 'block-heavy'])
def each_model(request):
    """The model above, and one whose blocks hold nearly everything (V = 33, d = 128, 3 layers)."""
    return small_model() if request.param == 'loss-heavy' else small_model(vocab_size=33, n_layer=3, n_embd=128)


def loss_fn(model, family, dtype, x0):
    name, options = FAMILIES[family]
    ctx = torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bfloat16' else contextlib.nullcontext()

    def fn():
        torch.manual_seed(1)
        with ctx:  # exiting autocast drops its weight cache, as in train.py (autocast around the forward only)
            nll, n = get_family(name).loss(model, x0, strata=STRATA, generator=torch.Generator().manual_seed(0),
                                           **options)
        return nll / n
    return fn


def test_parameter_gradient_and_optimizer_bytes_are_exact():
    """Bytes of the weights, gradients and AdamW states of a real model after a step == the planner's counts; the
    counts by kind match the modules they name."""
    model = make_model(vocab_size=37, n_layer=3, n_head=2, n_embd=32)
    cfg = model.cfg
    optimizer = torch.optim.AdamW(model.parameters())
    ar.loss(model, torch.randint(0, 36, (2, 16)))[0].backward()
    optimizer.step()
    p = memory.plan(cfg, 'ar', 1, dtype='float32', grad_accum=2)  # accumulation: gradients are held all along
    assert p['parameters'] == sum(q.nbytes for q in model.parameters())
    assert p['gradients'] == sum(q.grad.nbytes for q in model.parameters())
    assert p['optimizer'] == sum(t.nbytes for s in optimizer.state.values() for t in s.values())
    assert memory.param_numel(cfg) == sum(q.numel() for q in model.parameters())
    assert memory.param_numel(cfg, 'block') == sum(q.numel() for q in model.blocks[0].parameters())
    assert memory.param_numel(cfg, 'root') == memory.param_numel(cfg) - cfg.n_layer * memory.param_numel(cfg, 'block')
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.sigma_map.mlp[0]]
    assert memory.param_numel(cfg, 'linear_weight') == sum(m.weight.numel() for m in linear)
    # FSDP over 3 ranks: ceil(rows / 3) rows of every tensor
    assert memory.shard_numel(cfg, 3, fsdp=True) == sum(-(-q.shape[0] // 3) * q[0].numel() for q in model.parameters())


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('checkpointing', [False, True])
@pytest.mark.parametrize('family', FAMILIES)
def test_planned_activations_match_the_measured_bytes(each_model, family, dtype, checkpointing):
    """What the forward leaves for the backward, measured two ways: the saved-tensor hooks (unique storages,
    parameters excluded) and the live-tensor tracker at the end of the forward, which also sees the block inputs
    that checkpointing keeps (the hooks do not see inside a checkpointed block). bf16 autocast on CPU stands in for
    the GPU's: the same casts and the same saved tensors. Both within 10% of the planner (they agree to ~2%)."""
    model = each_model
    model.activation_checkpointing = checkpointing
    x0 = torch.randint(0, model.cfg.vocab_size - 1, (B, L), generator=torch.Generator().manual_seed(0))
    fn = loss_fn(model, family, dtype, x0)
    loss, hooked = memory.saved_tensor_bytes(fn, exclude=list(model.parameters()))
    del loss
    with memory.LiveTensors() as tracker:
        loss = fn()
    live = tracker.live - loss.nbytes
    act = memory.activation_bytes(model.cfg, FAMILIES[family][0], B, L, FAMILIES[family][1], dtype, checkpointing)
    _, copies = memory.working_weight_bytes(model.cfg, dtype, activation_checkpointing=checkpointing)
    planned = act['saved'] + copies  # autocast's weight copies that the backward keeps
    assert live == pytest.approx(planned, rel=0.10), f"live {live} vs planned {planned}: {live / planned:.3f}"
    if not checkpointing:
        assert hooked == pytest.approx(live, rel=0.01)  # the two measurements agree
    model.activation_checkpointing = False


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('checkpointing', [False, True])
@pytest.mark.parametrize('family', FAMILIES)
def test_planned_peak_matches_the_measured_peak(model, family, dtype, checkpointing):
    """The most bytes alive at once over a forward and backward (the live-tensor tracker, the CPU stand-in for
    torch.cuda.max_memory_allocated), gradients held from an earlier step as under accumulation, against the
    planner's peak minus the weights and AdamW states, which exist before: within 10% (they agree to ~3%)."""
    model.activation_checkpointing = checkpointing
    x0 = torch.randint(0, model.cfg.vocab_size - 1, (B, L), generator=torch.Generator().manual_seed(0))
    fn = loss_fn(model, family, dtype, x0)
    fn().backward()
    model.zero_grad(set_to_none=False)  # gradients exist and accumulate in place: their bytes are not counted
    with memory.LiveTensors() as tracker:
        fn().backward()
    p = memory.plan(model.cfg, FAMILIES[family][0], B, L, FAMILIES[family][1], dtype=dtype,
                    activation_checkpointing=checkpointing, grad_accum=2)
    planned = p['working_weights'] + p['activations'] + p['logits']
    assert tracker.peak == pytest.approx(planned, rel=0.10), f"{tracker.peak / planned:.3f} at the {p['phase']}"
    model.zero_grad(set_to_none=True)
    model.activation_checkpointing = False


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('family', FAMILIES)
def test_activation_checkpointing_changes_no_loss_or_gradient(family, dtype):
    """Recomputing the blocks in the backward gives the same loss and gradients (to 1e-6) for every family, and
    the switch does nothing without gradients (evaluation, sampling with a KV cache)."""
    fam, options = get_family(FAMILIES[family][0]), FAMILIES[family][1]
    model = make_model(vocab_size=29, n_layer=3, n_head=2, n_embd=32, seq_len=16).train()
    x0 = torch.randint(0, 28, (4, 16), generator=torch.Generator().manual_seed(0))
    ctx = torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bfloat16' else contextlib.nullcontext()
    results = []
    for checkpointing in (False, True):
        model.activation_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        with ctx:
            nll, n = fam.loss(model, x0, generator=torch.Generator().manual_seed(1), **options)
        (nll / n).backward()
        results.append((nll.detach(), {k: q.grad.clone() for k, q in model.named_parameters()}))
    (loss0, grads0), (loss1, grads1) = results
    assert torch.allclose(loss1, loss0, atol=1e-6, rtol=0)
    assert sum(g.abs().sum() for g in grads0.values()) > 0
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], atol=1e-6, rtol=0, msg=k)
    with torch.no_grad():  # no gradients: the plain forward, bit for bit
        model.activation_checkpointing = True
        a = model(x0, attn='causal')
        model.activation_checkpointing = False
        assert torch.equal(model(x0, attn='causal'), a)


def test_checkpointing_saves_memory_and_the_planner_knows_it():
    """At 1.7B, L = 2048: checkpointing cuts the activations ~12x (bf16); FSDP over 8 GPUs cuts the weights,
    gradients and optimizer states 8x; the plan's parts add up to its total; Duo's NELBO costs more than MDLM's
    cross-entropy; the largest micro-batch is the last that fits."""
    cfg = get_config('1.7b', 50258, 2048)
    plain = memory.plan(cfg, 'mdlm', 4, nproc=8)
    ckpt = memory.plan(cfg, 'mdlm', 4, nproc=8, activation_checkpointing=True)
    fsdp = memory.plan(cfg, 'mdlm', 4, nproc=8, fsdp=True)
    assert plain['total'] == sum(v for k, v in plain.items() if k not in ('total', 'phase'))
    assert 10 < plain['activations'] / ckpt['activations'] < 15
    assert plain['optimizer'] / fsdp['optimizer'] == pytest.approx(8, rel=1e-3)
    assert memory.plan(cfg, 'duo', 4, nproc=8)['total'] > plain['total']
    with pytest.raises(ValueError, match='both parts'):
        memory.plan(cfg, 'eso', 1, options={'alpha0': 0.5, 'batch_split': 0.5})
    gpu = 80e9
    best = memory.max_micro_batch(cfg, gpu, family='ar', nproc=8)
    assert best >= 2  # the goal for plain DDP
    assert memory.fits(memory.plan(cfg, 'ar', best, nproc=8)['total'], gpu)
    assert not memory.fits(memory.plan(cfg, 'ar', best + 1, nproc=8)['total'], gpu)
    assert memory.fit_warning(cfg, gpu, best, family='ar', nproc=8) is None
    warning = memory.fit_warning(cfg, gpu, 16, family='ar', nproc=8)
    assert warning.startswith('warning:') and f'--micro-batch-size {best}' in warning and '--fsdp' in warning
    for name, options in FAMILIES.values():  # the goal for FSDP + checkpointing over 8 GPUs: >= 8 sequences
        assert memory.max_micro_batch(cfg, gpu, family=name, options=options, nproc=8, fsdp=True,
                                      activation_checkpointing=True) >= 8


def test_cli_prints_the_plan_and_rejects_bad_input():
    cmd = [sys.executable, '-m', 'nanodllm.flops', '--size', '1.7b', '--seq-len', '2048', '--micro-batch-size', '4',
           '--nproc', '8', '--fsdp', '--activation-checkpointing', '--family', 'eso', '--gpu-memory', '80GB']
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    for word in ('parameters', 'gradients', 'optimizer', 'activations', 'logits', 'total', 'fits',
                 'largest micro-batch'):
        assert word in out.stdout
    bad = subprocess.run(cmd[:3] + ['--size', 'huge'], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith('error:') and len(bad.stderr.strip().splitlines()) == 1


# -----------------------------------------------------------------------------
# sampling: sample.py's pre-check counts the KV cache the sampler really allocates

@pytest.mark.parametrize('family,length', [('ar', 12), ('ar', 40), ('eso', 12), ('eso', 40)])
def test_the_sampling_check_counts_the_kv_cache_the_sampler_allocates(family, length, monkeypatch):
    """The bytes of the KV cache buffers a sampler allocates, summed after the sampling, against kv_cache_bytes:
    AR preallocates `length` rows (equal); Eso-LM starts at seq_len = 16 and doubles past it (length 12: equal;
    40: the bound holds). Lengths past seq_len are what sample.py's old one-row check missed."""
    cfg = ModelConfig(vocab_size=33, n_layer=2, n_head=2, n_embd=16, seq_len=16)
    torch.manual_seed(0)
    model = Model(cfg).eval()
    caches, new_cache = [], model.new_cache
    monkeypatch.setattr(model, 'new_cache', lambda *a, **k: caches.append(new_cache(*a, **k)) or caches[-1])
    prompt = torch.tensor([0]) if family == 'ar' else None
    get_family(family).sample(model, 3, length, steps=8, prompt=prompt, generator=torch.Generator().manual_seed(0))
    held = sum(t.numel() * t.element_size() for t in caches[0].k + caches[0].v)
    predicted = memory.kv_cache_bytes(cfg, family, 3, length)
    assert held > 0 and (held == predicted if family == 'ar' or length <= cfg.seq_len else held <= predicted)
    assert memory.kv_cache_bytes(cfg, family, 3, length, use_cache=False) == 0
    assert memory.sampling_bytes(cfg, family, 3, length) > predicted


def test_the_sampling_check_refuses_the_kv_cache_of_a_very_long_ar_sample():
    """The case sample.py used to let through: AR at --length 10,000,000 on the nano model, 2 samples: the cache is
    n_layer x 2 x n x H x length x hd x 4 bytes = 20.5 GB, where one row per call counted well under 1 GB."""
    cfg = get_config('nano', 257, 32)
    assert memory.kv_cache_bytes(cfg, 'ar', 2, 10**7) == cfg.n_layer * 2 * 2 * cfg.n_head * 10**7 * (
        cfg.n_embd // cfg.n_head) * 4
    assert memory.sampling_bytes(cfg, 'ar', 2, 10**7) > 20e9
