"""pytest set-up: one torch thread per test process. The tests use tiny models, for which a second thread only
adds synchronisation (on a loaded 2-core machine a tiny training step took 3 ms on one thread, 170 ms on two)."""
import torch

torch.set_num_threads(1)
