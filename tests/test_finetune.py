"""Fine-tuning end to end (issue 18): `train.py --init-from CKPT` on prompt/response records, then `sample.py
--prompt` / `--infill` on the result. Tiny models, byte tokenizer, a handful of records; runs go through the
session's fork-per-job `runner` (tests/scripts.py).

    python -m pytest -q tests/test_finetune.py

- the first training loss of a fine-tune is the checkpoint's loss on the same batch (same seed), and its first
  validation is the checkpoint's validation loss: the weights really are the checkpoint's;
- a fine-tune overfits five records (the loss falls far) and then decodes each response exactly, greedily, from its
  prompt, cut at its EOS (AR; MDLM in three orders: see OVERFIT);
- a fine-tune killed mid-run resumes exactly (records data, MDLM: the masks come from the saved random streams).
Bad inputs (a mismatched family, size or tokenizer; records without the fields; no record that fits; an infill gap
longer than the context) are rows of tests/test_cli.py.
"""
import json
import os

import pytest
import torch

from nanodllm import ar, data, decode, mdlm, records
from nanodllm.checkpoint import load_checkpoint
from nanodllm.families import get_family
from nanodllm.validation import validation_loss
from scripts import make_corpus

L = 16
TINY = ['--size', 'micro', '--seq-len', str(L), '--device', 'cpu', '--log-every', '1']  # nano cannot memorise them
# five training records and one more: a set of fewer than 20 records holds its last one out (records.py)
PAIRS = [('cat:', 'meow'), ('dog:', 'woof'), ('cow:', 'moo'), ('owl:', 'hoot'), ('hen:', 'cluck'), ('pig:', 'oink')]
TRAINED = PAIRS[:-1]
FAMILIES = {'ar': ['--family', 'ar'], 'mdlm': ['--family', 'mdlm']}


def logged_losses(out_dir):
    return [float(line.split('| loss ')[1].split()[0]) for line in open(os.path.join(out_dir, 'log.txt'))
            if line.startswith('step ') and '| loss ' in line]


def ok(out):
    assert out.returncode == 0 and 'Traceback' not in out.stderr, out.stderr[-3000:]
    return out


@pytest.fixture(scope='module')
def work(tmp_path_factory, runner):
    """A folder with the text corpus, the records file and a short pre-training run of each family tested."""
    tmp = tmp_path_factory.mktemp('finetune')
    corpus = make_corpus(tmp / 'text.txt')
    (tmp / 'pairs.jsonl').write_text(''.join(json.dumps({'prompt': p, 'response': r}) + '\n' for p, r in PAIRS))
    for name in ('ar', 'mdlm'):
        ok(runner('train.py', TINY + FAMILIES[name] + ['--data', corpus, '--batch-size', '8', '--max-steps', '10',
                                              '--eval-sequences', '4', '--out-dir', f'pre_{name}'], tmp))
    return tmp


def first_batch(work, monkeypatch):
    """The fine-tune's first training batch (x0, given): the Loader of train.py with --seed 1, batch 5."""
    monkeypatch.chdir(work)
    meta = records.prepare(str(work / 'pairs.jsonl'), 'byte', L)
    assert (meta['train_rows'], meta['val_rows']) == (5, 1)
    loader = data.Loader(os.path.join(meta['out_dir'], 'train.bin'), 5, L, seed=1,
                         prompt_path=records.prompt_path(meta, 'train'))
    return meta, loader.next_batch()


@pytest.mark.slow
def test_init_from_starts_at_the_checkpoint(work, runner, monkeypatch):
    """AR: the first logged training loss equals ar.loss of the checkpoint's model on the same (records) batch, and
    a run from scratch does not; MDLM: the first training loss equals the checkpoint's low-var loss on the same batch
    with the same random streams (train.py seeds --seed, then its CPU FLOP/s probe draws one 1024 x 1024 randn). With
    --lr 1e-30 the step changes no weight measurably: the validation at step 1 is the checkpoint's validation loss.
    The new checkpoint records where it started, at step 0 of a fresh schedule."""
    meta, (x0, given) = first_batch(work, monkeypatch)
    val = os.path.join(meta['out_dir'], 'val.bin'), records.prompt_path(meta, 'val')
    for name, family in (('ar', ar), ('mdlm', mdlm)):
        common = TINY + FAMILIES[name] + ['--data', 'pairs.jsonl', '--batch-size', '5', '--max-steps', '1',
                                          '--lr', '1e-30']
        ok(runner('train.py', common + ['--init-from', f'pre_{name}/ckpt.pt', '--out-dir', f'ft1_{name}'], work))
        ok(runner('train.py', common + ['--out-dir', f'scratch1_{name}'], work))
        model, ckpt = load_checkpoint(str(work / f'pre_{name}' / 'ckpt.pt'))
        model.train()
        torch.manual_seed(1)
        torch.randn(1024, 1024)                                              # flops.peak_flops on a CPU
        with torch.no_grad():
            nll, n = family.loss(model, x0, train=True, generator=torch.Generator().manual_seed(1 * 1_000_003),
                                 given=given, **ckpt['options'])
        first, = logged_losses(work / f'ft1_{name}')
        assert abs(first - (nll / n).item()) < 1e-4, (name, first, (nll / n).item())
        assert abs(logged_losses(work / f'scratch1_{name}')[0] - first) > 0.05, name
        expected = validation_loss(model.eval(), family, ckpt['options'], val[0], 1, 5, L, prompt_path=val[1])
        result = json.loads((work / f'ft1_{name}' / 'results.json').read_text())
        assert result['val_loss'] == pytest.approx(expected, rel=1e-5), name
        done = torch.load(work / f'ft1_{name}' / 'ckpt.pt', weights_only=True)
        assert done['init_from']['path'] == str(work / f'pre_{name}' / 'ckpt.pt') and done['init_from']['step'] == 10
        assert done['data_kind'] == 'records' and done['step'] == 1
        assert 'records: 5 train + 1 val rows of 16 tokens' in open(work / f'ft1_{name}' / 'log.txt').read()


def response(out):
    """The text of sample 0 in sample.py's output."""
    return out.stdout.split('=== sample 0 ===\n')[1].split('\n\n')[0]


# steps to memorise the five records (micro, lr 5e-3, seed 1) and the decoding orders then checked, each exactly
# right: (order, block_size, steps) of the sampler. MDLM trains 500: at 300 it decoded 'hen:cluckk' in confidence
# order once the backbone's fast paths changed its float rounding. Duo and Eso-LM are not checked: at 300 steps
# Eso-LM decoded 3 of the 5 in random order, Duo fewer (the report of issue 18 has the numbers); a test of them would
# need several times the steps.
RANDOM, CONFIDENCE, LEFT_TO_RIGHT = ('random', None, None), ('confidence', None, None), ('random', 1, 1)
OVERFIT = {'ar': (300, [RANDOM]), 'mdlm': (500, [RANDOM, CONFIDENCE, LEFT_TO_RIGHT])}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(OVERFIT))
def test_finetune_overfits_records_and_decodes_them_exactly(work, runner, name):
    """A fine-tune on the five records (all of them in every batch): the loss falls far; then greedy decoding with the
    prompt given reproduces every response exactly, and nothing after its EOS: through sample.py --prompt, and for
    all five prompts at once (one row each, given = the prompt) in each order listed in OVERFIT; for the diffusion
    families an infill of the response's canvas too, its gap filling in step by step (--show-steps)."""
    steps, orders = OVERFIT[name]
    ok(runner('train.py', TINY + FAMILIES[name] + [
        '--data', 'pairs.jsonl', '--batch-size', '5', '--max-steps', str(steps), '--lr', '5e-3', '--warmup-steps',
        '10', '--eval-every', str(steps), '--init-from', f'pre_{name}/ckpt.pt', '--out-dir', f'ft_{name}'], work))
    losses = logged_losses(work / f'ft_{name}')
    assert len(losses) == steps and sum(losses[-10:]) / 10 < 0.02 * losses[0], (name, losses[0], losses[-10:])
    out = ok(runner('sample.py', ['--ckpt', f'ft_{name}/ckpt.pt', '--prompt', 'cat:', '--temperature', '0',
                                  '--num-samples', '1', '--device', 'cpu'], work))
    assert response(out) == 'cat:meow', out.stdout[-500:]
    model, _ = load_checkpoint(str(work / f'ft_{name}' / 'ckpt.pt'))
    family, tok = get_family(name), data.get_tokenizer('byte')
    given = torch.full((len(TRAINED), L), decode.FREE)
    given[:, :4] = torch.tensor([tok.encode(p) for p, _ in TRAINED])           # every prompt is 4 bytes
    for order, block_size, n_steps in orders:
        x, _ = family.sample(model, len(TRAINED), L, steps=n_steps, given=given, temperature=0, order=order,
                             block_size=block_size, generator=torch.Generator().manual_seed(0))
        texts = [tok.decode(row) for row in decode.cut_at_eos(x, tok.eos, given)]
        assert texts == [p + r for p, r in TRAINED], (name, order, block_size, texts)
    if name != 'ar':
        out = ok(runner('sample.py', ['--ckpt', f'ft_{name}/ckpt.pt', '--infill', 'cat:[_12_]', '--temperature', '0',
                                      '--num-samples', '1', '--show-steps', '1', '--device', 'cpu'], work))
        assert response(out) == 'cat:[meow]', out.stdout[-500:]
        states = [line for line in out.stdout.splitlines() if line.startswith('[call ')]
        assert data.MASK_CHAR in states[0] and data.MASK_CHAR not in states[-1] and "'cat:" in states[0]


@pytest.mark.slow
def test_finetune_on_records_resumes_exactly(work, runner):
    """MDLM fine-tune, 6 steps straight vs killed in step 5 and resumed (with the same --init-from): the same final
    weights, bit for bit."""
    common = TINY + FAMILIES['mdlm'] + ['--data', 'pairs.jsonl', '--batch-size', '5', '--max-steps', '6',
                                        '--eval-every', '2', '--init-from', 'pre_mdlm/ckpt.pt']
    ok(runner('train.py', common + ['--out-dir', 'straight'], work))
    assert runner('train.py', common + ['--out-dir', 'killed'], work, kill_at=[7]).returncode == -9
    ok(runner('train.py', common + ['--out-dir', 'killed', '--resume'], work))
    a, b = (torch.load(work / d / 'ckpt.pt', weights_only=True) for d in ('straight', 'killed'))
    assert a['step'] == b['step'] == 6 and a['init_from'] == b['init_from'] and b['init_from']['step'] == 10
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert logged_losses(work / 'straight') == logged_losses(work / 'killed')[:4] + logged_losses(work / 'killed')[5:]
    refused = runner('train.py', common[:-2] + ['--out-dir', 'killed', '--resume', '--max-steps', '8'], work)
    assert refused.returncode == 2 and "--resume: --init-from is None here but 'pre_mdlm/ckpt.pt'" in refused.stderr
