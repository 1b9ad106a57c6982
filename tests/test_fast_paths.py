"""The fast paths of issues 10 and 21 give the reference results, in every family: the mask logit every loss and
sampler sees, no host-device syncs in the losses, the flex_attention path of a boolean mask (compiled) against SDPA
with the dense mask (eager); the backbone's sigma = 0 fast paths (the modulation folded into the LayerNorm, the gate
folded into the linear layer) against the reference forms, and rotary (`Rotary`, no rolled copy) against the rolled
formula, values and gradients. Speed itself is measured in benchmarks/step_time.py, never here.

    python -m pytest -q tests/test_fast_paths.py
"""
import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import make_model
from nanodllm import ar, duo, eso, mdlm
from nanodllm.model import NEG_INF, LayerNorm, apply_rotary, gated, modulate, norm_modulate, rotary_cos_sin

V = 11
MASK = V - 1
LOSSES = [(ar, {}), (mdlm, {'loss_type': 'low_var'}), (mdlm, {'loss_type': 'elbo'}), (duo, {}),
          (eso, {'alpha0': 1.0}), (eso, {'alpha0': 0.5, 'batch_split': 0.5}), (eso, {'alpha0': 0.0})]


class MaskLogitCheck(nn.Module):
    """Wraps a Model: every output it hands to a family must carry the mask logit at exactly -1e6 (spec §0.1)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg, self.calls = model, model.cfg, 0

    def new_cache(self, *args):
        return self.inner.new_cache(*args)

    def forward(self, idx, **kw):
        out = self.inner(idx, **kw)
        assert out.dtype == torch.float32 and torch.all(out[..., MASK] == NEG_INF)
        self.calls += 1
        return out


@pytest.mark.parametrize('family, options', LOSSES)
def test_every_loss_sees_the_mask_logit_at_minus_1e6(family, options):
    model = MaskLogitCheck(make_model(vocab_size=V, seq_len=12))
    x0 = torch.randint(0, V - 1, (4, 12))
    for train in (True, False):
        nll, n = family.loss(model, x0, train=train, generator=torch.Generator().manual_seed(0), **options)
        assert torch.isfinite(nll) and n > 0
    assert model.calls >= 2


@pytest.mark.parametrize('family, kw', [(ar, {'prompt': torch.tensor([1])}), (ar, {'prompt': torch.tensor([1]),
                                                                                    'use_cache': False}),
                                        (mdlm, {}), (duo, {}), (eso, {'alpha0': 1.0}), (eso, {'alpha0': 0.0}),
                                        (eso, {'alpha0': 0.5, 'use_cache': False})])
def test_every_sampler_sees_the_mask_logit_at_minus_1e6(family, kw):
    model = MaskLogitCheck(make_model(vocab_size=V, seq_len=12))
    x, nfe = family.sample(model, 3, 12, steps=4 if family is not ar else None,
                           generator=torch.Generator().manual_seed(0), **kw)
    assert model.calls == nfe and not (x == MASK).any()


class NoSync(TorchDispatchMode):
    """Fails on the aten ops that make the host wait for the device: reading a value (.item()), nonzero, and
    indexing with a boolean mask (its output size depends on the data)."""
    SYNCING = {'aten::_local_scalar_dense', 'aten::item', 'aten::nonzero', 'aten::masked_select',
               'aten::masked_scatter', 'aten::argwhere'}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        assert name not in self.SYNCING, f"{name} syncs host and device"
        if name in ('aten::index', 'aten::index_put', 'aten::index_put_'):
            indices = args[1]
            assert not any(i is not None and i.dtype == torch.bool for i in indices), f"{name} with a boolean mask"
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('family, options', LOSSES)
def test_losses_never_sync_host_and_device(family, options):
    """Forward, loss and backward of every family run without an op whose output size or value the host must wait
    for (on a GPU each would stall the step)."""
    model = make_model(vocab_size=V, seq_len=12).train()
    x0 = torch.randint(0, V - 1, (4, 12))
    g = torch.Generator().manual_seed(0)
    with NoSync():
        nll, n = family.loss(model, x0, train=True, generator=g, **options)
        (nll / n).backward()


def test_eso_masked_nll_equals_boolean_indexing():
    """The ignore-index cross-entropy of the Eso-LM losses equals the reference with boolean indexing."""
    logits = torch.randn(3, 7, V)
    targets = torch.randint(0, V - 1, (3, 7))
    masked = torch.rand(3, 7) < 0.5
    ref = torch.zeros(3, 7)
    ref[masked] = nn.functional.cross_entropy(logits[masked], targets[masked], reduction='none')
    torch.testing.assert_close(eso._masked_nll(logits, targets, masked), ref, atol=1e-6, rtol=0)


def test_duo_nelbo_normalises_logits_itself():
    """duo.loss feeds raw logits: the NELBO is the same as with the log-softmax the tests and the spec use."""
    logits = 3 * torch.randn(2, 5, V, dtype=torch.float64)
    logits[..., MASK] = NEG_INF
    x0 = torch.randint(0, V - 1, (2, 5))
    zt = torch.randint(0, V, (2, 5))
    alpha = torch.tensor([[0.3], [0.9]], dtype=torch.float64)
    a = duo.nelbo_per_token(logits, x0, zt, alpha, -torch.ones_like(alpha))
    b = duo.nelbo_per_token(logits.log_softmax(-1), x0, zt, alpha, -torch.ones_like(alpha))
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.slow
def test_flex_attention_block_mask_equals_the_dense_mask():
    """Compiled, a boolean mask goes through flex_attention with a block mask built from it; eager, through SDPA with
    the dense mask. On Eso-LM's sequential input ([z0 ; x0], the (2L, 2L) mask, the head on the first L rows) both
    give the same logits. CPU has no flex_attention backward, so this checks the forward (the GPU training path uses
    the same block mask); inductor on CPU: ~1 min cold."""
    model = make_model(vocab_size=V, seq_len=8)
    L = 8
    x = torch.randint(0, V, (2, 2 * L))
    pos = torch.stack([torch.randperm(L), torch.randperm(L)]).repeat(1, 2)
    mask = eso.sequential_mask(L)
    ops = []

    def inductor_recording_ops(graph_module, example_inputs):
        ops.extend(str(node.target) for node in graph_module.graph.nodes)
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(graph_module, example_inputs)

    with torch.no_grad():
        out_flex = torch.compile(model, backend=inductor_recording_ops)(x, attn=mask, pos=pos, rows=slice(0, L))
        out_dense = model(x, attn=mask, pos=pos, rows=slice(0, L))
    assert any('flex_attention' in op for op in ops) and not any('scaled_dot_product' in op for op in ops)
    torch.testing.assert_close(out_flex, out_dense, atol=1e-5, rtol=1e-5)



def _values_and_grads(fn, tensors, params=()):
    """fn(*tensors) and the gradients of a fixed random projection of it with respect to every tensor and to the
    parameters `params` (zeroed first)."""
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    for p in params:
        p.grad = None
    out = fn(*tensors)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(5))).sum().backward()
    return [out.detach()] + [t.grad for t in tensors] + [p.grad for p in params]


def _assert_all_close(fast, ref, **tol):
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize('rows', [1, 3])  # one row shared by the batch (the fused layer_norm), one per sequence (Duo)
def test_norm_modulate_equals_layernorm_then_modulate(rows):
    """norm_modulate(ln, x, shift, scale) == modulate(ln(x), shift, scale): values and the gradients of x, shift,
    scale and the LayerNorm weight."""
    torch.manual_seed(0)
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.weight.add_(0.3 * torch.randn(16))
    x, shift, scale = 3 * torch.randn(3, 7, 16) + 1, torch.randn(rows, 1, 16), torch.randn(rows, 1, 16)
    fast = _values_and_grads(lambda *t: norm_modulate(ln, *t), [x, shift, scale], [ln.weight])
    ref = _values_and_grads(lambda x, shift, scale: modulate(ln(x), shift, scale), [x, shift, scale], [ln.weight])
    _assert_all_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_norm_modulate_keeps_fp32_under_bf16_autocast():
    """Under bf16 autocast (CPU here, as on a GPU) both forms take a bf16 modulation and give the same fp32 output."""
    torch.manual_seed(0)
    ln, x = LayerNorm(16), torch.randn(3, 7, 16)
    shift, scale = torch.randn(1, 1, 16).bfloat16(), torch.randn(1, 1, 16).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fast, ref = norm_modulate(ln, x, shift, scale), modulate(ln(x), shift, scale)
    assert fast.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('rows, bias', [(1, True), (1, False), (3, True)])
def test_gated_equals_the_gated_residual(rows, bias):
    """gated(x, gate, linear, h) == x + gate * linear(h) (the shared gate folded into the weight): values and the
    gradients of x, gate, h and the linear layer's weight and bias."""
    torch.manual_seed(0)
    linear = nn.Linear(24, 16, bias=bias)
    x, gate, h = torch.randn(3, 7, 16), torch.randn(rows, 1, 16), torch.randn(3, 7, 24)
    params = list(linear.parameters())
    fast = _values_and_grads(lambda *t: gated(t[0], t[1], linear, t[2]), [x, gate, h], params)
    ref = _values_and_grads(lambda x, gate, h: x + gate * linear(h), [x, gate, h], params)
    _assert_all_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_rotary_equals_the_rolled_formula():
    """apply_rotary (two passes, its backward the rotation by the opposite angle) == the rolled formula
    x [cos, cos] + roll(x, hd/2) [-sin, sin] through autograd, on a strided view of a qkv output with per-sequence
    positions in the model's (B, T, H, hd) layout and on (B, H, T, hd) tensors; and the backward passes gradcheck."""
    torch.manual_seed(0)
    B, T, H, hd = 2, 5, 3, 8
    qkv = torch.randn(B, T, 3 * H * hd)
    pos = torch.stack([torch.randperm(T), torch.randperm(T)])
    cos, sin = rotary_cos_sin(pos, hd)                                          # (B, 1, T, hd)
    rolled = lambda x, cos, sin: x * cos + x.roll(hd // 2, dims=-1) * sin      # noqa: E731
    tables = [t.transpose(1, 2).expand(-1, -1, H, -1).contiguous() for t in (cos, sin)]   # as Model.forward lays them
    for x, (c, s) in [(qkv.view(B, T, 3 * H, hd)[:, :, H:2 * H], tables), (torch.randn(B, H, T, hd), (cos, sin))]:
        fast = _values_and_grads(lambda x: apply_rotary(x, c, s), [x])
        ref = _values_and_grads(lambda x: rolled(x, c, s), [x])
        _assert_all_close(fast, ref, atol=1e-6, rtol=1e-6)
    c64, s64 = (t.double() for t in rotary_cos_sin(torch.arange(T), hd))
    assert torch.autograd.gradcheck(lambda x: apply_rotary(x, c64, s64), torch.randn(B, H, T, hd, dtype=torch.float64,
                                                                                     requires_grad=True))


@pytest.mark.parametrize('attn', ['causal', 'full'])
def test_shared_modulation_fast_path_equals_the_per_row_path(attn):
    """The whole model with sigma = None (one modulation row: fused LayerNorm, gates folded into the weights) equals
    the same model fed sigma = 0 for every sequence (B rows: the reference forms), values and all gradients."""
    model = make_model(vocab_size=V, seq_len=12).train()
    x = torch.randint(0, V, (3, 12))
    params = list(model.parameters())
    fast = _values_and_grads(lambda: model(x, attn=attn), [], params)
    ref = _values_and_grads(lambda: model(x, attn=attn, sigma=torch.zeros(3)), [], params)
    _assert_all_close(fast, ref, atol=1e-5, rtol=1e-4)
