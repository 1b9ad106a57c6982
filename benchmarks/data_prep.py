"""Data preparation speed and memory: tokens/s and peak RSS of `nanodllm.data.prepare` on a generated corpus.

    python benchmarks/data_prep.py --size-mb 1000 --runs gpt2:1 gpt2:2 byte:0 \
        --json benchmarks/results/data_prep_cpu.json

Writes a corpus of about --size-mb MB as 8 .jsonl files (documents: slices of 0.5-10 KB of the bundled Shakespeare at
random offsets) into a temporary folder under --dir, prepares it once per run (TOKENIZER:WORKERS) in a fresh process
into a fresh cache (nothing is reused), and records wall time, tokens/s, peak RSS of the main process and of its
worker processes (getrusage RUSAGE_SELF / RUSAGE_CHILDREN), CPU seconds and the load average before and after.
The corpus and the caches are deleted at the end. The time includes prepare's hashing pass (reported separately).
"""
import argparse, json, lzma, os, platform, random, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = r'''
import json, os, resource, sys, time
from nanodllm import data
from nanodllm.corpus import Corpus
name, workers, corpus, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
data.get_tokenizer(name)                                    # BPE ranks loaded before the baseline
mb = lambda who: resource.getrusage(who).ru_maxrss / 1024   # Linux: KB -> MB
cpu = lambda who: resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
baseline, cpu0 = mb(resource.RUSAGE_SELF), cpu(resource.RUSAGE_SELF)
t0 = time.perf_counter()
Corpus(corpus).fingerprint()                                # what prepare's hashing pass costs on its own
hash_seconds = time.perf_counter() - t0
load_before, cpu1, t0 = os.getloadavg()[0], cpu(resource.RUSAGE_SELF), time.perf_counter()
meta = data.prepare(corpus, name, out, workers=workers)
seconds = time.perf_counter() - t0
tokens = meta['train_tokens'] + meta['val_tokens']
print(json.dumps(dict(tokenizer=name, workers=workers, seconds=round(seconds, 2), tokens=tokens,
                      tokens_per_s=round(tokens / seconds), text_mb_per_s=None, hash_seconds=round(hash_seconds, 2),
                      documents=meta['n_documents'], baseline_rss_mb=round(baseline, 1),
                      peak_rss_mb_main=round(mb(resource.RUSAGE_SELF), 1),
                      peak_rss_mb_workers=round(mb(resource.RUSAGE_CHILDREN), 1),
                      cpu_seconds_main=round(cpu(resource.RUSAGE_SELF) - cpu1, 1),
                      cpu_seconds_workers=round(cpu(resource.RUSAGE_CHILDREN), 1),
                      load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2))))
'''

def make_corpus(folder, size_mb, seed=0):
    """8 .jsonl files of ~size_mb MB in all; documents are 0.5-10 KB slices of Shakespeare."""
    with lzma.open(ROOT / 'nanodllm' / 'assets' / 'shakespeare.txt.xz') as f:
        text = f.read().decode()
    rng, target, written, docs = random.Random(seed), size_mb * 10**6, 0, 0
    for k in range(8):
        with open(folder / f'part{k}.jsonl', 'w') as f:
            while written < target * (k + 1) / 8:
                start = rng.randrange(len(text) - 10_000)
                line = json.dumps({'text': text[start:start + rng.randrange(500, 10_000)]}) + '\n'
                f.write(line)
                written, docs = written + len(line), docs + 1
    return docs

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size-mb', type=int, default=1000, help='corpus size in MB (of .jsonl)')
    p.add_argument('--runs', nargs='+', default=['gpt2:1', 'gpt2:2', 'byte:0'], help='TOKENIZER:WORKERS ...')
    p.add_argument('--dir', default=None, help='where the temporary corpus and caches go (default: the temp dir)')
    p.add_argument('--json', default=None, help='write the results here')
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix='data_prep_', dir=args.dir))
    try:
        (work / 'corpus').mkdir()
        t0 = time.perf_counter()
        docs = make_corpus(work / 'corpus', args.size_mb)
        corpus_bytes = sum(f.stat().st_size for f in (work / 'corpus').iterdir())
        print(f"corpus: {corpus_bytes / 1e6:,.0f} MB, {docs:,} documents in 8 .jsonl files "
              f"({time.perf_counter() - t0:.0f} s to write)", flush=True)
        rows = []
        for k, run in enumerate(args.runs):
            name, workers = run.split(':')
            cmd = [sys.executable, '-c', RUN, name, workers, str(work / 'corpus'), str(work / f'out{k}')]
            out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if out.returncode:
                sys.exit(f"run {run} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row['text_mb_per_s'] = round(corpus_bytes / 1e6 / row['seconds'], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(work / f'out{k}')
        result = dict(command=' '.join(['python'] + sys.argv), corpus_mb=round(corpus_bytes / 1e6, 1), documents=docs,
                      machine=dict(cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
                                   processor=platform.processor() or platform.machine()),
                      rows=rows)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
    finally:
        shutil.rmtree(work, ignore_errors=True)  # ~1 GB of corpus + caches

if __name__ == '__main__':
    main()
