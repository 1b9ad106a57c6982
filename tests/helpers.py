"""Shared test helpers: tiny models on CPU (import with `from helpers import make_model`)."""
import torch

from nanodllm.config import ModelConfig
from nanodllm.model import Model


def make_model(vocab_size=11, n_layer=2, n_head=2, n_embd=32, seq_len=16, randomize=True, seed=0):
    """A tiny fp32 Model in eval mode. randomize=True gives the zero-initialised adaLN layers and head random
    weights, so that outputs depend on the input and on sigma (the paper's init makes them exactly 0)."""
    torch.manual_seed(seed)
    model = Model(ModelConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, seq_len=seq_len))
    if randomize:
        with torch.no_grad():
            for lin in [b.adaLN for b in model.blocks] + [model.adaLN_f, model.head]:
                lin.weight.normal_(0, 0.2)
                lin.bias.normal_(0, 0.2)
    return model.eval()
