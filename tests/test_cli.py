"""A newcomer's mistakes with train.py, sample.py and `python -m nanodllm.flops`: each row is one bad command that
must end with exit code 2 (1 for a sampler failure), one line `error: ...` containing a phrase that names the
problem, no traceback, and never torch's hint to load a checkpoint with weights_only=False.

    python -m pytest -q tests/test_cli.py      # ~20 s: one Python start, then one fork per row (tests/scripts.py)

Every row fails before any training step (a run that trained would exit 0 and fail the row).
"""
import os
import re
import resource
import subprocess
import sys

import pytest
import torch

from nanodllm import flops, memory
from nanodllm.checkpoint import make_checkpoint
from nanodllm.families import FAMILIES
from nanodllm.config import get_config
from nanodllm.model import Model
from scripts import ENV, ROOT, make_corpus

CUDA, MPS = torch.cuda.is_available(), torch.backends.mps.is_available()

# (name, arguments after the defaults, phrase of the message, exit code); {corpus}, {file}, ... are fixture paths
TRAIN = [
    ('family', ['--family', 'nope'], "unknown family 'nope'; valid: ar, mdlm, duo, eso", 2),
    ('size', ['--size', 'huge'], "unknown size 'huge'; valid: nano", 2),
    ('loss', ['--family', 'mdlm', '--loss', 'mse'], "argument --loss: invalid choice", 2),
    ('loss for ar', ['--family', 'ar', '--loss', 'elbo'], '--loss does not apply to --family ar', 2),
    ('alpha0 range', ['--family', 'eso', '--alpha0', '1.5'], 'argument --alpha0: must be a finite number >= 0', 2),
    ('alpha0 nan', ['--family', 'eso', '--alpha0', 'nan'], 'argument --alpha0: must be a finite number', 2),
    ('alpha0 for mdlm', ['--family', 'mdlm', '--alpha0', '0.5'], '--alpha0 does not apply to --family mdlm', 2),
    ('batch-split range', ['--family', 'eso', '--batch-split', '-0.1'], 'argument --batch-split: must be', 2),
    ('eso split empty', ['--family', 'eso', '--alpha0', '0.5'], 'leaves one of them empty', 2),
    ('batch-split at alpha0 1', ['--family', 'eso', '--batch-split', '0.5'],
     "--batch-split splits a batch between Eso-LM's two parts, but --alpha0 1 trains only the diffusion part", 2),
    ('batch-split at alpha0 0', ['--family', 'eso', '--alpha0', '0', '--batch-split', '0.5'],
     '--alpha0 0 trains only the sequential part: drop --batch-split', 2),
    ('tokenizer', ['--tokenizer', 'bpe'], 'argument --tokenizer: invalid choice', 2),
    ('seq-len 0', ['--seq-len', '0'], 'argument --seq-len: must be an integer >= 1', 2),
    ('seq-len text', ['--seq-len', 'long'], 'argument --seq-len: must be an integer', 2),
    ('ar seq-len 1', ['--family', 'ar', '--seq-len', '1'], '--seq-len must be >= 2 for AR', 2),
    ('batch abc', ['--batch-size', 'abc'], 'argument --batch-size: must be a number of sequences', 2),
    ('batch 0', ['--batch-size', '0'], 'argument --batch-size: must be a number of sequences', 2),
    ('batch negative', ['--batch-size', '-4'], 'argument --batch-size', 2),
    ('batch float', ['--batch-size', '1.5'], 'argument --batch-size', 2),
    ('batch tokens not a multiple', ['--batch-size', '100tok'], 'is not a positive multiple of --seq-len 32', 2),
    ('batch TOK below seq-len', ['--batch-size', '16TOK'], 'is not a positive multiple of --seq-len 32', 2),
    ('batch tok typo', ['--batch-size', '128tokens'], 'argument --batch-size', 2),
    ('micro negative', ['--micro-batch-size', '-1'], 'argument --micro-batch-size: must be an integer >= 0', 2),
    ('micro not a divisor', ['--micro-batch-size', '3'], 'must be a multiple of --micro-batch-size 3', 2),
    ('micro above batch', ['--micro-batch-size', '8'], 'must be a multiple of --micro-batch-size 8', 2),
    ('max-steps 0', ['--max-steps', '0'], 'argument --max-steps: must be an integer >= 1', 2),
    ('max-steps negative', ['--max-steps', '-5'], 'argument --max-steps: must be an integer >= 1', 2),
    ('max-steps float', ['--max-steps', '1e3'], 'argument --max-steps: must be an integer', 2),
    ('flops negative', ['--flops', '-1'], 'argument --flops: must be a finite number >= 0', 2),
    ('flops nan', ['--flops', 'nan'], 'argument --flops: must be a finite number', 2),
    ('flops inf', ['--flops', 'inf'], 'argument --flops: must be a finite number', 2),
    ('flops too small', ['--flops', '1'], 'buys less than one step', 2),
    ('lr 0', ['--lr', '0'], 'argument --lr: must be a finite number > 0', 2),
    ('lr negative', ['--lr=-1e-3'], 'argument --lr: must be a finite number > 0', 2),
    ('lr nan', ['--lr', 'nan'], 'argument --lr: must be a finite number > 0', 2),
    ('lr inf', ['--lr', 'inf'], 'argument --lr: must be a finite number > 0', 2),
    ('lr text', ['--lr', 'fast'], 'argument --lr: must be a finite number > 0', 2),
    ('min-lr negative', ['--min-lr', '-1'], 'argument --min-lr: must be a finite number >= 0', 2),
    ('min-lr above lr', ['--lr', '0.01', '--min-lr', '0.1'], '--min-lr 0.1 is above --lr 0.01', 2),
    ('warmup', ['--warmup-steps', '-2'], 'argument --warmup-steps: must be an integer >= -1', 2),
    ('weight decay negative', ['--weight-decay', '-0.1'], 'argument --weight-decay: must be a finite number >= 0', 2),
    ('weight decay nan', ['--weight-decay', 'nan'], 'argument --weight-decay', 2),
    ('beta1 1', ['--beta1', '1'], 'argument --beta1: must be a finite number >= 0 and < 1', 2),
    ('beta1 negative', ['--beta1', '-0.1'], 'argument --beta1', 2),
    ('beta2 above 1', ['--beta2', '1.5'], 'argument --beta2: must be a finite number >= 0 and < 1', 2),
    ('grad-clip negative', ['--grad-clip', '-1'], 'argument --grad-clip: must be a finite number >= 0', 2),
    ('grad-clip inf', ['--grad-clip', 'inf'], 'argument --grad-clip', 2),
    ('eval-every 0', ['--eval-every', '0'], 'argument --eval-every: must be an integer >= 1', 2),
    ('eval-sequences 0', ['--eval-sequences', '0'], 'argument --eval-sequences: must be an integer >= 1', 2),
    ('eval-sequences too many', ['--eval-sequences', '100000'], 'but --eval-sequences asks for 100000', 2),
    ('eval-batches removed', ['--eval-batches', '2'], 'this flag was removed: use --eval-sequences', 2),
    ('sample-every', ['--sample-every', '-1'], 'argument --sample-every: must be an integer >= 0', 2),
    ('log-every', ['--log-every', '0'], 'argument --log-every: must be an integer >= 1', 2),
    ('device unknown', ['--device', 'tpu'], "argument --device: unknown device 'tpu'", 2),
    ('dtype unknown', ['--dtype', 'float64'], 'argument --dtype: invalid choice', 2),
    ('dtype bf16 on cpu', ['--dtype', 'bfloat16'], '--dtype bfloat16 on cpu', 2),
    ('dtype fp16 on cpu', ['--dtype', 'float16'], '--dtype float16 on cpu', 2),
    ('seed negative', ['--seed', '-1'], 'argument --seed: must be an integer >= 0', 2),
    ('resume and overwrite', ['--resume', '--overwrite'], 'not allowed with argument', 2),
    ('unknown flag', ['--learning-rate', '1'], 'unrecognized arguments: --learning-rate', 2),
    ('data missing', ['--data', '{tmp}/no_such_corpus.txt'], 'no_such_corpus', 2),
    ('data empty', ['--data', '{empty}'], 'empty.txt', 2),
    ('data not utf-8', ['--data', '{latin1}'], 'UTF-8', 2),
    ('data smaller than a batch', ['--batch-size', '100000'], 'smaller --batch-size', 2),
    ('seq-len longer than the data', ['--seq-len', '100000'], 'blocks of seq_len=100000', 2),
    ('out-dir is a file', ['--out-dir', '{file}'], 'is a file, not a folder', 2),
    ('resume without checkpoint', ['--resume'], 'there is no', 2),
    ('out-dir holds a checkpoint', ['--out-dir', '{ckpt_dir}'], 'pass --resume to continue that run or --overwrite', 2),
    ('resume another family', ['--out-dir', '{ckpt_dir}', '--resume', '--family', 'duo'],
     "--resume: --family is 'duo' here but 'mdlm'", 2),
    ('records without the fields', ['--data', '{nofields}'], "have neither a 'text' field nor 'prompt'/'response'", 2),
    ('no record fits the row', ['--data', '{longrecords}'], 'fits a row of --seq-len 32 (the shortest needs 41', 2),
    ('init-from missing', ['--init-from', '{tmp}/none.pt'], 'no checkpoint at', 2),
    ('init-from another family', ['--init-from', '{mdlm}', '--family', 'ar'],
     'is a mdlm checkpoint but --family is ar: pass --family mdlm', 2),
    ('init-from another size', ['--init-from', '{mdlm}', '--family', 'mdlm', '--size', 'zepto'],
     'is a --size nano model (2 layers, width 64, 2 heads) but --size is zepto', 2),
    ('init-from another tokenizer', ['--init-from', '{mdlm}', '--family', 'mdlm', '--tokenizer', 'gpt2'],
     'was trained with --tokenizer byte but --tokenizer is gpt2', 2),
    ('curriculum on mdlm', ['--family', 'mdlm', '--curriculum'], '--curriculum applies to --family duo only', 2),
    ('curriculum option on ar', ['--curriculum-tau', '-1', '-2'], '--curriculum-tau applies to --family duo only', 2),
    ('curriculum option alone', ['--family', 'duo', '--curriculum-steps', '1', '2'], '--curriculum-steps needs '
     '--curriculum', 2),
    ('curriculum steps order', ['--family', 'duo', '--curriculum', '--curriculum-steps', '5', '2'],
     'need 0 <= START <= END', 2),
    ('curriculum gamma order', ['--family', 'duo', '--curriculum', '--gamma', '-1', '-3'], 'need MIN < MAX', 2),
    ('distill on ar', ['--distill-from', '{duo}'], '--distill-from applies to --family duo only', 2),
    ('distill option alone', ['--family', 'duo', '--distill-every', '3'], '--distill-every needs --distill-from', 2),
    ('distill and curriculum', ['--family', 'duo', '--curriculum', '--distill-from', '{duo}'], 'are two stages', 2),
    ('distill a non-duo checkpoint', ['--family', 'duo', '--distill-from', '{mdlm}'], 'is a mdlm checkpoint', 2),
    ('distill another size', ['--family', 'duo', '--distill-from', '{duo}', '--size', 'micro'],
     'pass the same --size and --seq-len', 2),
    ('distill another tokenizer', ['--family', 'duo', '--distill-from', '{duo}', '--tokenizer', 'gpt2'],
     'uses the byte tokenizer', 2),
    ('distill a missing checkpoint', ['--family', 'duo', '--distill-from', '{tmp}/missing.pt'], 'no checkpoint at', 2),
]
if not CUDA:
    TRAIN += [('device cuda unavailable', ['--device', 'cuda'], 'no CUDA GPU is visible', 2),
              ('device cuda:0 unavailable', ['--device', 'cuda:0'], 'no CUDA GPU is visible', 2)]
if not MPS:
    TRAIN += [('device mps unavailable', ['--device', 'mps'], 'not available here', 2)]

SAMPLE = [
    ('ckpt missing', ['--ckpt', '{tmp}/missing.pt'], 'no checkpoint at', 2),
    ('ckpt is a folder', ['--ckpt', '{tmp}'], 'no checkpoint at', 2),
    ('ckpt truncated', ['--ckpt', '{truncated}'], 'is a damaged checkpoint (it may be truncated', 2),
    ('ckpt not torch', ['--ckpt', '{file}'], 'is not a nanodllm checkpoint', 2),
    ('ckpt random bytes', ['--ckpt', '{random}'], 'is not a nanodllm checkpoint', 2),  # torch: "weights_only=False"
    ('ckpt malicious pickle', ['--ckpt', '{evil}'], 'refusing to load', 2),
    ('ckpt other dict', ['--ckpt', '{other}'], 'is not a nanodllm checkpoint', 2),
    ('ckpt edited family', ['--ckpt', '{bad_family}'], "unknown family 'nope'", 2),
    ('ckpt edited options', ['--ckpt', '{bad_options}'], "loss_type 'mse'", 2),
    ('ckpt options of another family', ['--ckpt', '{eso_options_on_mdlm}'], 'do not have the keys', 2),
    ('ckpt edited config', ['--ckpt', '{bad_config}'], 'do not fit its model_config', 2),
    ('ckpt edited tokenizer', ['--ckpt', '{bad_tokenizer}'], 'does not fit the gpt2 tokenizer', 2),
    ('ckpt NaN weights', ['--ckpt', '{nan}'], 'non-finite weights', 2),
    ('NaN probabilities', ['--ckpt', '{overflow}', '--length', '8'], 'sampling probabilities contain NaN', 1),
    ('temperature negative', ['--temperature', '-1'], 'argument --temperature: must be a finite number >= 0', 2),
    ('temperature nan', ['--temperature', 'nan'], 'argument --temperature', 2),
    ('top-p 0', ['--top-p', '0'], 'argument --top-p: must be a finite number > 0 and <= 1', 2),
    ('top-p above 1', ['--top-p', '1.5'], 'argument --top-p', 2),
    ('steps negative', ['--steps', '-1'], 'argument --steps: must be an integer >= 0', 2),
    ('num-samples 0', ['--num-samples', '0'], 'argument --num-samples: must be an integer >= 1', 2),
    ('num-samples text', ['--num-samples', 'two'], 'argument --num-samples', 2),
    ('length negative', ['--length', '-1'], 'argument --length: must be an integer >= 0', 2),
    ('length too long for memory', ['--num-samples', '1000000000', '--length', '32'],
     'lower --length or --num-samples', 2),
    ('KV cache too large', ['--ckpt', '{ar}', '--num-samples', '10000000', '--length', '64'],
     '(the KV cache, allocated at its full length: ', 2),
    ('length far past the context', ['--ckpt', '{ar}', '--length', '10000000'], 'more than 8x the 32 tokens', 2),
    ('noise-removal unknown', ['--noise-removal', 'magic'], 'argument --noise-removal: invalid choice', 2),
    ('noise-removal none for duo', ['--ckpt', '{duo}', '--noise-removal', 'none'], 'not available for duo', 2),
    ('noise-removal for ar', ['--ckpt', '{ar}', '--noise-removal', 'greedy'], 'does not apply to the ar family', 2),
    ('alpha0 range', ['--alpha0', '2'], 'argument --alpha0: must be a finite number >= 0 and <= 1', 2),
    ('alpha0 for mdlm', ['--alpha0', '0.5'], '--alpha0 does not apply to the mdlm family', 2),
    ('prompt not utf-8', ['--prompt', 'caf\udce9'], '--prompt cannot be encoded', 2),
    ('prompt too long', ['--prompt', 'x' * 40, '--length', '20'], 'shorten --prompt or raise --length', 2),
    ('show-steps negative', ['--show-steps', '-1'], 'argument --show-steps: must be an integer >= 0', 2),
    ('infill gap longer than the context', ['--infill', 'O [_40_] Romeo'], 'is 40 tokens, longer than the model', 2),
    ('infill longer than the context', ['--infill', 'x' * 30 + '[____]'], "is 34 tokens (text and gaps) but the", 2),
    ('infill without a gap', ['--infill', 'O Romeo'], '--infill has no gap: mark what to fill with [____]', 2),
    ('infill gap of 0 tokens', ['--infill', 'O [_0_] Romeo'], 'has 0 tokens', 2),
    ('infill with ar', ['--ckpt', '{ar}', '--infill', 'O [__] Romeo'], '--infill needs a diffusion family', 2),
    ('infill and prompt', ['--infill', 'O [__]', '--prompt', 'x'], '--infill is the whole row', 2),
    ('order unknown', ['--order', 'best'], 'argument --order: invalid choice', 2),
    ('order duo cannot run', ['--ckpt', '{duo}', '--order', 'confidence'], "cannot decode in order 'confidence'", 2),
    ('block-size 0', ['--block-size', '0'], 'argument --block-size: must be an integer >= 1', 2),
    ('seed negative', ['--seed', '-3'], 'argument --seed', 2),
    ('device unknown', ['--device', 'gpu0'], "argument --device: unknown device 'gpu0'", 2),
    ('task unknown', ['--task', 'chess'], "unknown task 'chess'", 2),
    ('task with a gpt2 checkpoint', ['--ckpt', '{gpt2}', '--task', 'sudoku'],
     'sudoku is byte-level but this checkpoint has the gpt2 vocabulary (50257 ids)', 2),
    ('task records longer than the rows', ['--task', 'countdown'], 'train with a larger --seq-len', 2),
]
if not CUDA:
    SAMPLE += [('device cuda unavailable', ['--device', 'cuda'], 'no CUDA GPU is visible', 2)]


# python -m nanodllm.flops: (name, arguments after --size nano, phrase of the message); run in this process (main)
FLOPS = [
    ('micro-batch 0', ['--micro-batch-size', '0'], 'argument --micro-batch-size: must be an integer >= 1'),
    ('nproc 0', ['--nproc', '0'], 'argument --nproc: must be an integer >= 1'),
    ('seq-len 0', ['--seq-len', '0'], 'argument --seq-len: must be an integer >= 2'),
    ('vocab 0', ['--vocab', '0'], 'argument --vocab: must be an integer >= 2'),
    ('dtype unknown', ['--dtype', 'foo'], 'argument --dtype: invalid choice'),
    ('gpu-memory text', ['--gpu-memory', 'abc'], "argument --gpu-memory: must be a size such as 80GB"),
    ('gpu-memory 0', ['--gpu-memory', '0GB'], 'argument --gpu-memory: must be a size'),
    ('alpha0 range', ['--family', 'eso', '--alpha0', '2'], 'argument --alpha0: must be a finite number >= 0 and <= 1'),
    ('batch negative', ['--batch-size', '-8'], 'argument --batch-size: must be an integer >= 0'),
    ('size unknown', ['--size', 'huge'], "unknown size 'huge'"),
    ('family unknown', ['--family', 'mdml'], "unknown family 'mdml'"),
    ('alpha0 for ar', ['--alpha0', '0.5'], '--alpha0 does not apply to --family ar'),
    ('batch-split at alpha0 1', ['--family', 'eso', '--batch-split', '0.5'], '--alpha0 1 trains only one'),
    ('eso split empty', ['--family', 'eso', '--alpha0', '0.5', '--batch-split', '0.5'], 'pick --batch-split in (0, 1)'),
    ('batch not a multiple', ['--batch-size', '3', '--nproc', '2'],
     'not a multiple of --micro-batch-size 1 x --nproc 2'),
]


class Evil:
    """Unpickling this runs open(path, 'w'): a stand-in for arbitrary code in a crafted checkpoint."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def _checkpoint(path, family='mdlm', edit=None, weights=None, tokenizer='byte'):
    cfg = get_config('nano', 257 if tokenizer == 'byte' else 50258, 32)
    torch.manual_seed(0)
    model = Model(cfg)
    if weights is not None:
        with torch.no_grad():
            weights(model)
    ckpt = make_checkpoint(model, cfg, {'size': 'nano'}, family, dict(FAMILIES[family].OPTIONS), tokenizer, step=1,
                           val_loss=1.0)
    if edit is not None:
        edit(ckpt)
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope='module')
def outputs(tmp_path_factory, runner):
    """Run every row once -> {(script, name): result with returncode, stdout, stderr}."""
    tmp = tmp_path_factory.mktemp('cli')
    paths = dict(tmp=str(tmp), corpus=make_corpus(tmp / 'text.txt'), file=str(tmp / 'afile'),
                 empty=str(tmp / 'empty.txt'), latin1=str(tmp / 'latin1.txt'), evil=str(tmp / 'evil.pt'),
                 marker=str(tmp / 'code_ran'), ckpt_dir=str(tmp / 'done'))
    (tmp / 'afile').write_text('not a checkpoint')
    paths['random'] = str(tmp / 'random.bin')
    (tmp / 'random.bin').write_bytes(bytes(torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(0))
                                           .tolist()))
    (tmp / 'empty.txt').write_text('')
    (tmp / 'latin1.txt').write_bytes('café au lait'.encode('latin-1'))
    paths['nofields'], paths['longrecords'] = str(tmp / 'qa.jsonl'), str(tmp / 'long.jsonl')
    (tmp / 'qa.jsonl').write_text('{"q": "2+2?", "a": "4"}\n')
    (tmp / 'long.jsonl').write_text('{"prompt": "%s", "response": "%s"}\n' % ('p' * 20, 'r' * 20) * 3)
    torch.save({'nanodllm_checkpoint': 2, 'model': Evil(paths['marker'])}, paths['evil'])
    os.makedirs(paths['ckpt_dir'])
    paths['mdlm'] = _checkpoint(tmp / 'done' / 'ckpt.pt')
    paths['ar'] = _checkpoint(tmp / 'ar.pt', 'ar')
    paths['duo'] = _checkpoint(tmp / 'duo.pt', 'duo')
    paths['gpt2'] = _checkpoint(tmp / 'gpt2.pt', tokenizer='gpt2')
    with open(paths['mdlm'], 'rb') as f:
        (tmp / 'truncated.pt').write_bytes(f.read()[:2000])
    paths['truncated'] = str(tmp / 'truncated.pt')
    torch.save({'weights': torch.zeros(3)}, tmp / 'other.pt')
    paths['other'] = str(tmp / 'other.pt')
    edits = dict(bad_family=lambda c: c.update(family='nope'),
                 bad_options=lambda c: c['options'].update(loss_type='mse'),
                 eso_options_on_mdlm=lambda c: c.update(options=dict(FAMILIES['eso'].OPTIONS)),
                 bad_config=lambda c: c['model_config'].update(n_layer=3, n_embd=32),
                 bad_tokenizer=lambda c: c.update(tokenizer='gpt2'))
    for name, edit in edits.items():
        paths[name] = _checkpoint(tmp / f'{name}.pt', edit=edit)
    paths['nan'] = _checkpoint(tmp / 'nan.pt', weights=lambda m: m.blocks[0].mlp[0].weight[0, 0].fill_(float('nan')))
    paths['overflow'] = _checkpoint(tmp / 'overflow.pt', weights=lambda m: m.head.weight.fill_(3e38))  # finite

    base_train = ['--data', paths['corpus'], '--size', 'nano', '--seq-len', '32', '--batch-size', '4', '--device',
                  'cpu', '--max-steps', '1', '--eval-sequences', '4']
    results = {}
    for i, (name, args, _, _) in enumerate(TRAIN):
        results[('train', name)] = runner('train.py', base_train + ['--out-dir', str(tmp / f'out{i}')] +
                                          [a.format(**paths) for a in args], tmp)
    for name, args, _, _ in SAMPLE:
        results[('sample', name)] = runner('sample.py', ['--ckpt', paths['mdlm'], '--num-samples', '1', '--length',
                                                         '16'] + [a.format(**paths) for a in args], tmp)
    results['marker'] = os.path.exists(paths['marker'])
    return results


def _check(out, phrase, code):
    text = out.stdout + out.stderr
    assert 'Traceback' not in text, text[-3000:]
    assert not re.search(r'weights_only`?( set to |=)`?False', text), text[-3000:]  # never suggest an unsafe load
    assert out.returncode == code, (out.returncode, text[-3000:])
    errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, out.stderr[-3000:]                            # one line, not a usage block
    assert phrase in errors[0], errors[0]


@pytest.mark.parametrize('name,args,phrase,code', TRAIN, ids=[row[0] for row in TRAIN])
def test_train_refuses_bad_input_in_one_line(outputs, name, args, phrase, code):
    _check(outputs[('train', name)], phrase, code)


@pytest.mark.parametrize('name,args,phrase,code', SAMPLE, ids=[row[0] for row in SAMPLE])
def test_sample_refuses_bad_input_in_one_line(outputs, name, args, phrase, code):
    _check(outputs[('sample', name)], phrase, code)


@pytest.mark.parametrize('name,args,phrase', FLOPS, ids=[row[0] for row in FLOPS])
def test_flops_refuses_bad_input_in_one_line(capsys, name, args, phrase):
    with pytest.raises(SystemExit) as stop:  # any other exception (ZeroDivisionError, AttributeError) fails the row
        flops.main(['--size', 'nano'] + args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith('error:') and len(err.strip().splitlines()) == 1, err
    assert phrase in err, err


def test_the_table_is_large_and_the_crafted_pickle_ran_no_code(outputs):
    assert len(TRAIN) + len(SAMPLE) >= 60
    assert not outputs['marker']  # sample.py refused evil.pt without unpickling its payload


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc/self/status')
def test_an_allocation_that_fails_while_sampling_is_one_line(tmp_path):
    """The pre-check passes (the host has the memory) but the process may not map it: an address-space limit a
    little above what the imports need, so the KV cache of 6000 AR samples of 256 tokens (1.6 GB) cannot be
    allocated. The CPU allocator's RuntimeError becomes one line naming the fix, exit 1."""
    from nanodllm.common import free_memory
    ckpt = _checkpoint(tmp_path / 'ar.pt', 'ar')
    kv = memory.kv_cache_bytes(get_config('nano', 257, 32), 'ar', 6000, 256)
    if free_memory('cpu') < 2 * kv:
        pytest.skip('too little free memory for the pre-check to pass')
    probe = subprocess.run([sys.executable, '-c', "import torch, tqdm, nanodllm.checkpoint, nanodllm.data, "
                            "nanodllm.memory; print(open('/proc/self/status').read().split('VmSize:')[1].split()[0])"],
                           env=ENV, capture_output=True, text=True, timeout=300)
    limit = int(probe.stdout) * 1024 + int(0.6 * kv)                   # room for the first layer's k and v only
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), '--ckpt', ckpt, '--device', 'cpu',
                          '--length', '256', '--num-samples', '6000'], env=ENV, capture_output=True, text=True,
                         timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    _check(out, 'out of memory while sampling 6000 x 256 tokens on cpu: lower --length or --num-samples', 1)