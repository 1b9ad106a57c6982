"""pytest set-up: one torch thread per test process, and the session's script runner (tests/scripts.py).

The tests use tiny models, for which a second thread only adds synchronisation (on a loaded 2-core machine a tiny
training step took 3 ms on one thread, 170 ms on two)."""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope='session')
def runner():
    """Runs train.py / sample.py in forked children of one warm Python (tests/scripts.py): ~0.1-1 s per run."""
    from scripts import Runner
    r = Runner()
    yield r
    r.close()
