"""Model shapes: the `ModelConfig` dataclass and the `SIZES` dict of named sizes.

Tiny sizes are for CPU runs and tests. The rest is the paper's size ladder (spec §6.1, `configs/model/*.yaml` of
the authors' code). A size's name is only a label (the paper's own naming): "75M" has more non-embedding
parameters than "85M". `1.7b` is the paper's 1.7B model, called "2121M" in its code: 2176 wide, 28 layers, 17 heads.
All models use cond_dim 128 and a 4x MLP; the vocabulary comes from the tokenizer (+1 row for the mask token).
"""
from dataclasses import dataclass


@dataclass
class ModelConfig:
    vocab_size: int = 257     # V: tokenizer ids + 1 mask token (the mask id is V - 1; spec §0.1)
    n_layer: int = 4          # number of DiT blocks
    n_head: int = 4           # attention heads; head dim = n_embd // n_head
    n_embd: int = 128         # model width d
    cond_dim: int = 128       # width of the sigma (time) embedding that feeds adaLN (spec §5)
    seq_len: int = 256        # context length L the model is trained on (rotary has no table limit)

    @property
    def mask_id(self):
        return self.vocab_size - 1


# name -> (n_embd, n_layer, n_head), with the paper's non-embedding parameter count (V = 32001, head included,
# spec §6.1 "non-embed (JSON)") in the comment; tests/test_model.py checks every count.
SIZES = {
    # tiny sizes for CPU and tests (not in the paper)
    'nano':  (64, 2, 2),
    'micro': (128, 4, 4),
    'tiny':  (192, 6, 6),
    'small': (256, 8, 8),
    # smaller CPU sizes, for the iso-FLOP curves of sweep.py's cpu and quick presets (zepto < atto < femto < pico <
    # nano). At this width the time-conditioning layers (sigma map 49k, adaLN 768 d per block) are most of the
    # non-embedding parameters: zepto has 89k, of which 78k condition on time.
    'zepto': (16, 2, 2),
    'atto':  (24, 2, 2),
    'femto': (32, 2, 2),
    'pico':  (48, 2, 2),
    # the paper's ladder
    '6M':    (256, 6, 4),      # 14,258,144
    '19M':   (384, 8, 6),      # 29,024,216
    '34M':   (512, 8, 8),      # 44,963,288
    '48M':   (576, 9, 9),      # 58,543,724
    '66M':   (640, 10, 10),    # 74,878,160
    '85M':   (640, 13, 10),    # 91,123,360
    '75M':   (640, 16, 8),     # 107,368,360
    '113M':  (768, 12, 12),    # 116,989,232
    '142M':  (768, 15, 12),    # 140,022,232
    '170M':  (768, 18, 12),    # 163,055,232
    '180M':  (896, 14, 14),    # 173,656,104
    '206M':  (896, 16, 14),    # 194,323,104
    '231M':  (896, 18, 14),    # 214,990,104
    '268M':  (1024, 16, 16),   # 247,237,976
    '302M':  (1024, 18, 16),   # 274,002,976
    '336M':  (1024, 20, 16),   # 300,768,976
    '472M':  (1280, 18, 10),   # 413,262,720
    '551M':  (1280, 21, 10),   # 475,244,720
    '571M':  (1408, 18, 11),   # 493,509,592
    '629M':  (1280, 24, 10),   # 537,225,720
    '666M':  (1408, 21, 11),   # 568,176,592
    '761M':  (1408, 24, 11),   # 642,844,592
    '831M':  (1536, 22, 12),   # 698,878,464
    '944M':  (1536, 25, 12),   # 787,412,464
    '1233M': (1792, 24, 14),   # 1,016,354,208
    '1476M': (2048, 22, 16),   # 1,208,661,952
    '1678M': (2048, 25, 16),   # 1,364,461,952
    '2121M': (2176, 28, 17),   # 1,708,865,824
}
SIZES['1.7b'] = SIZES['2121M']  # the paper's "1.7B" model


def get_config(size, vocab_size, seq_len):
    """ModelConfig for a named size; an unknown name is a one-line error listing the valid ones."""
    if size not in SIZES:
        raise ValueError(f"unknown --size {size!r}; valid sizes: {', '.join(SIZES)}")
    n_embd, n_layer, n_head = SIZES[size]
    return ModelConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, seq_len=seq_len)
