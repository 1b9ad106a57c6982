"""Sample quality (nanodllm/quality.py): gen PPL against a brute-force judge NLL, entropy closed forms, the
real-vs-shuffled scale, re-tokenization, throughput bookkeeping, the Pareto frontier's settings, and sample.py --eval
(`sweep.py --pareto`, the Pareto command, is tested in test_pareto.py).

    python -m pytest -q tests/test_quality.py          # ~30 s on one CPU core
"""
import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import make_model
from nanodllm import ar, data, mdlm, pareto, quality
from nanodllm.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from nanodllm.families import FAMILIES
from nanodllm.config import get_config
from nanodllm.model import Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ['', 'a', 'To be, or not to be: that is the question.\n',
         'ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.']


def save(path, model, family='ar', options=None, data_name='shakespeare', tokenizer='byte'):
    args = argparse.Namespace(size='nano', data=data_name, seq_len=model.cfg.seq_len)
    save_checkpoint(str(path), make_checkpoint(model, model.cfg, args, family, options or {}, tokenizer, step=0,
                                               val_loss=float('nan')))
    return str(path)


def random_model(seq_len=16, seed=0):
    """A tiny byte-level model (V = 257 with the mask) whose outputs depend on its input."""
    return make_model(vocab_size=257, n_layer=2, n_head=2, n_embd=32, seq_len=seq_len, seed=seed)


def brute_force_nll(next_logits, ids, context, bos, stride):
    """-log p of every scored token, one forward per token on the context its window gives it: [bos] + all ids before
    it while they fit the first window; afterwards the ids before it inside the `context` ids that end where the
    window scoring it ends (windows end every `stride` ids). next_logits(list of ids) -> logits (V,) of the next."""
    prefix = [] if bos is None else [bos]
    first = context - len(prefix)                          # ids covered by the first window
    nll, n = 0.0, 0
    for i in range(len(ids)):
        if i < first:
            ctx = prefix + ids[:i]
            if not ctx:                                    # no BOS: the very first token is not scored
                continue
        else:
            end = first
            while end <= i:                                # later windows end every `stride` ids
                end = min(end + stride, len(ids))
            ctx = ids[max(0, end - context):i]
        with torch.no_grad():
            nll -= next_logits(ctx).double().log_softmax(-1)[ids[i]].item()
        n += 1
    return nll, n


@pytest.mark.parametrize('bos,stride', [('tokenizer', None), ('tokenizer', 3), (None, None), (None, 15)])
def test_gen_ppl_is_exp_of_the_brute_force_judge_nll_over_windows(tmp_path, bos, stride):
    """Texts longer than the judge's context (16) continue in sliding windows; batching, padding and pooling must
    give exactly the per-token NLL, pooled over all tokens of all texts (not a mean of per-text perplexities)."""
    judge = quality.load_judge(save(tmp_path / 'judge.pt', random_model(seq_len=16)))
    if bos is None:
        judge.bos = None
    tok = data.get_tokenizer('byte')

    def next_logits(ctx):
        return judge.model(torch.tensor([ctx]), attn='causal')[0, -1]
    results = [brute_force_nll(next_logits, tok.encode(t), 16, judge.bos, stride or 8) for t in TEXTS]
    total, n = sum(a for a, _ in results), sum(b for _, b in results)
    assert n == sum(len(t.encode()) - (bos is None and len(t) > 0) for t in TEXTS)  # every token once
    nll_sum, n_tokens = quality.judge_nll(judge, TEXTS, batch_size=3, stride=stride)  # 3: texts share batches
    assert n_tokens == n
    assert abs(nll_sum - total) < 1e-3
    if stride is None:
        assert abs(quality.gen_ppl(judge, TEXTS) - math.exp(total / n)) < 1e-4 * math.exp(total / n)
        per_text = [math.exp(a / b) for a, b in results if b]
        assert abs(quality.gen_ppl(judge, TEXTS) - sum(per_text) / len(per_text)) > 1e-3  # pooled, not averaged


def test_entropy_closed_forms():
    assert quality.unigram_entropy(torch.full((2, 10), 7)) == 0.0                           # constant
    assert abs(quality.unigram_entropy(torch.arange(12)[None]) - math.log(12)) < 1e-12     # all distinct
    mixed = torch.tensor([[3, 3, 1, 2]])                     # p = (1/2, 1/4, 1/4) -> 1.5 log 2
    assert abs(quality.unigram_entropy(mixed) - 1.5 * math.log(2)) < 1e-12
    both = torch.tensor([[5, 5, 5, 5], [0, 1, 2, 3]])        # the mean over samples, not the pooled histogram
    assert abs(quality.unigram_entropy(both) - math.log(4) / 2) < 1e-12
    assert quality.unigram_entropy(torch.tensor([[4, 1, 3, 3], [3, 4, 3, 1]])) == quality.unigram_entropy(mixed)


@pytest.fixture(scope='module')
def trained_judge(tmp_path_factory):
    """A nano AR judge trained in-process for 150 steps on Shakespeare bytes (a few seconds on one core)."""
    d = tmp_path_factory.mktemp('judge')
    meta = data.prepare('shakespeare', 'byte', out_dir=d / 'data')
    torch.manual_seed(0)
    model = Model(get_config('nano', 257, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = data.Loader(os.path.join(meta['out_dir'], 'train.bin'), 16, 64, seed=0)
    for _ in range(150):
        nll, n = ar.loss(model, loader.next_batch())
        (nll / n).backward()
        opt.step()
        opt.zero_grad()
    return save(d / 'judge.pt', model.eval())


def test_real_text_scores_better_than_the_same_tokens_shuffled(trained_judge, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # reference() prepares data/shakespeare_byte under the cwd
    judge = quality.load_judge(trained_judge)
    ref = quality.reference(judge, 'shakespeare', 'byte', n=8, length=64)
    assert ref['real_ppl'] < 0.7 * ref['shuffled_ppl'], ref
    assert ref['real_entropy'] == ref['shuffled_entropy']  # same tokens: entropy alone cannot tell them apart
    assert 2.0 < ref['real_entropy'] < math.log(64)


def test_retokenization_between_byte_and_gpt2_round_trips_the_text():
    text = "ROMEO: café — naïve 日本語 🙂\n\n  spaces\tand 'quotes' <|endoftext|>"
    byte, gpt2 = data.get_tokenizer('byte'), data.get_tokenizer('gpt2')
    ids = byte.encode(text)
    text1 = byte.decode(ids)                      # what a byte model's sample decodes to
    ids2 = gpt2.encode(text1)                     # the judge's tokens
    assert gpt2.decode(ids2) == text
    assert byte.encode(gpt2.decode(ids2)) == ids
    assert gpt2.decode(gpt2.encode(byte.decode(byte.encode(gpt2.decode(gpt2.encode(text)))))) == text


class FakeHFTokenizer:
    """The two things HFJudge uses from a Hugging Face tokenizer, over the byte tokenizer."""
    bos_token_id = ord('\n')

    def __call__(self, text, add_special_tokens=True):
        assert add_special_tokens is False        # BOS is added per window, not by the tokenizer
        return {'input_ids': list(text.encode())}


class FakeHFModel(torch.nn.Module):
    """A nanodllm AR model behind the Hugging Face calling convention (input_ids, attention_mask -> .logits)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config = model, argparse.Namespace(max_position_embeddings=model.cfg.seq_len)

    def forward(self, input_ids, attention_mask):
        assert attention_mask.shape == input_ids.shape
        return argparse.Namespace(logits=self.inner(input_ids, attn='causal'))


def test_hf_judge_adapter_matches_the_ar_judge_on_the_same_model(tmp_path):
    ar_judge = quality.load_judge(save(tmp_path / 'judge.pt', random_model(seq_len=16)))
    hf_judge = quality.HFJudge('fake', model=FakeHFModel(ar_judge.model), tokenizer=FakeHFTokenizer())
    assert hf_judge.context == 16 and hf_judge.bos == ar_judge.bos
    assert abs(quality.gen_ppl(hf_judge, TEXTS) - quality.gen_ppl(ar_judge, TEXTS)) < 1e-6


def test_a_real_hugging_face_judge_matches_its_brute_force_nll(tmp_path):
    """Only with the `judge` extra installed: a tiny random GPT-2 with a byte-level tokenizer, saved and loaded back
    through hf:<folder>, scores exactly as one forward per token does."""
    transformers = pytest.importorskip('transformers')
    tokenizers = pytest.importorskip('tokenizers')
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's bytes -> unicode map
    chars = {b: chr(b) if b in printable else chr(256 + sum(c not in printable for c in range(b))) for b in range(256)}
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=chars[10])
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=256, n_positions=16, n_embd=32,
                                                                 n_layer=2, n_head=2)).eval()
    model.save_pretrained(tmp_path / 'hf')
    tok.save_pretrained(tmp_path / 'hf')
    judge = quality.load_judge(f"hf:{tmp_path / 'hf'}")
    assert judge.context == 16 and judge.bos == 10 and judge.encode('é\n') == [195, 169, 10]
    results = [brute_force_nll(lambda ctx: model(torch.tensor([ctx])).logits[0, -1], list(t.encode()), 16, 10, 8)
               for t in TEXTS]
    total, n = sum(a for a, _ in results), sum(b for _, b in results)
    nll_sum, n_tokens = quality.judge_nll(judge, TEXTS, batch_size=3)
    assert n_tokens == n and abs(nll_sum - total) < 1e-3


def test_missing_transformers_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'transformers', None)  # import transformers -> ImportError
    with pytest.raises(ValueError, match=r'pip install -e "\.\[judge\]"'):
        quality.load_judge('hf:gpt2')


def test_a_diffusion_checkpoint_is_refused_as_judge(tmp_path):
    with pytest.raises(ValueError, match='must be an AR checkpoint'):
        quality.load_judge(save(tmp_path / 'm.pt', random_model(), family='mdlm', options={'loss_type': 'low_var'}))
    with pytest.raises(ValueError, match='no judge checkpoint'):
        quality.load_judge(str(tmp_path / 'nope.pt'))


def test_timed_sample_returns_the_samples_of_an_untimed_call():
    """Warm-up and timing must not touch the samples: same generator seed, same samples, in one batch or several."""
    model = random_model(seq_len=12)
    x, nfe, seconds = quality.timed_sample(mdlm, model, 5, 12, batch_size=5, steps=4, seed=3)
    ref, ref_nfe = mdlm.sample(model, 5, 12, steps=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, ref) and nfe == ref_nfe and seconds > 0
    x2, _, _ = quality.timed_sample(mdlm, model, 5, 12, batch_size=2, steps=4, seed=3)
    g = torch.Generator().manual_seed(3)
    parts = [mdlm.sample(model, k, 12, steps=4, generator=g)[0] for k in (2, 2, 1)]
    assert torch.equal(x2, torch.cat(parts))


def test_evaluate_setting_counts_generated_tokens_only(trained_judge, tmp_path, monkeypatch):
    """AR starts from BOS: its L - 1 generated tokens are timed, judged and counted; a diffusion model's L."""
    monkeypatch.chdir(tmp_path)
    judge = quality.load_judge(trained_judge)
    model, ckpt = load_checkpoint(trained_judge)
    r = quality.evaluate_setting(model, ckpt, judge, num_samples=3, length=20, batch_size=2)
    assert r['generated_tokens'] == 19 and r['nfe'] == 19 and r['steps'] is None
    assert abs(r['tok_s'] * r['seconds'] - 3 * 19) < 1e-6
    assert r['judge_tokens'] == 3 * 19  # byte judge on byte samples: one judge token per generated byte
    assert 1 < r['gen_ppl'] < 257 and 0 < r['entropy'] <= math.log(19)


def test_pareto_settings_and_frontier():
    assert pareto.pareto_settings('ar', [8, 16]) == [dict(steps=None, alpha0=None, temperature=1.0, top_p=1.0)]
    assert [s['steps'] for s in pareto.pareto_settings('mdlm', [8, 16], alpha0s=[0.5])] == [8, 16]
    eso = pareto.pareto_settings('eso', [8, 16], alpha0s=[1.0, 0.5, 0.0], top_ps=[1.0, 0.9])
    assert len(eso) == 2 * (2 + 2 + 1)  # alpha0 = 0 is all sequential: one setting, steps unused
    rows = [dict(label='a', tok_s=10, gen_ppl=50), dict(label='a', tok_s=20, gen_ppl=60),
            dict(label='a', tok_s=15, gen_ppl=70),   # slower and worse than the second: dominated
            dict(label='a', tok_s=20, gen_ppl=60),   # a tie is not domination
            dict(label='b', tok_s=5, gen_ppl=80)]    # another label: its own frontier
    assert pareto.pareto_frontier(rows) == [True, True, False, True, True]
    assert pareto.parse_ckpts('runs/ar/ckpt.pt, eso=runs/eso-alpha0=1/ckpt.pt,runs/eso-alpha0=1/ckpt.pt') == [
        ('ar', 'runs/ar/ckpt.pt'), ('eso', 'runs/eso-alpha0=1/ckpt.pt'), ('eso-alpha0=1', 'runs/eso-alpha0=1/ckpt.pt')]


@pytest.fixture(scope='module')
def nano_checkpoints(tmp_path_factory):
    """One untrained nano checkpoint per family (built in-process; samplers and judge do not need training)."""
    d = tmp_path_factory.mktemp('ckpts')
    options = {'ar': {}, 'mdlm': {'loss_type': 'low_var'}, 'duo': {}, 'eso': {'loss_type': 'low_var', 'alpha0': 1.0,
                                                                              'batch_split': 1.0}}
    paths = {}
    for i, name in enumerate(FAMILIES):
        paths[name] = save(d / f'{name}.pt', random_model(seq_len=16, seed=i), name, options[name])
    return paths


def run(cmd, cwd):
    return subprocess.run([sys.executable] + cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))


@pytest.mark.slow
def test_sample_eval_prints_one_row_per_step_count_and_writes_json(nano_checkpoints, trained_judge, tmp_path):
    cmd = [os.path.join(ROOT, 'sample.py'), '--ckpt', nano_checkpoints['mdlm'], '--eval', '--judge', trained_judge,
           '--num-samples', '4', '--steps', '2,4,8', '--eval-json', 'e.json']
    out = run(cmd, tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith('| ') and line[2].isdigit()]
    assert [r.split('|')[1].strip() for r in rows] == ['2', '4', '8']
    assert 'real text gen PPL' in out.stdout and 'shuffled gen PPL' in out.stdout
    res = json.loads((tmp_path / 'e.json').read_text())
    assert [r['steps'] for r in res['rows']] == [2, 4, 8] and [r['nfe'] for r in res['rows']] == [3, 5, 9]
    assert {'gen_ppl', 'entropy', 'tok_s', 'seconds', 'nfe'} <= set(res['rows'][0]) and res['reference']
    for bad_flags, message in [(['--judge', ''], 'pass --judge'),
                               (['--judge', nano_checkpoints['duo']], 'must be an AR checkpoint')]:
        bad = run(cmd + bad_flags, tmp_path)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = run([os.path.join(ROOT, 'sample.py'), '--ckpt', nano_checkpoints['mdlm'], '--steps', '2,4'], tmp_path)
    assert bad.returncode == 2 and 'need --eval' in bad.stderr
