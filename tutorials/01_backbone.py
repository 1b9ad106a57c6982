"""Lesson 01: the backbone every family shares (DiT blocks, adaLN-zero, rotary) and its two knobs, attn and sigma.

    python tutorials/01_backbone.py            # a few seconds: no training
    python tutorials/01_backbone.py --quick    # the same, smaller

Checks, on a tiny model, what the lesson claims: adaLN-zero makes the initial model output exactly 0; 'causal'
hides the future and 'full' does not; rotary makes the output depend only on relative positions; Eso-LM's
"causal over a clean-first order" is an ordinary boolean mask in the original positions. Then draws the attention
masks of AR, MDLM/Duo, Eso-LM's diffusion part and Eso-LM's sequential part -> 01_attention_masks.png.
"""
import lesson_utils as lu
import torch

from nanodllm import eso
from nanodllm.model import Model
from nanodllm.config import ModelConfig


def max_diff(a, b):
    return (a - b).abs().max().item()


def main(argv=None):
    args = lu.parser(__doc__).parse_args(argv)
    L = 8 if args.quick else 12
    torch.manual_seed(args.seed)
    cfg = ModelConfig(vocab_size=11, n_layer=2, n_head=2, n_embd=32, seq_len=L)  # 10 tokens + the mask (id 10)
    model = Model(cfg).eval()
    x = torch.randint(0, 10, (1, L))

    # 1) adaLN-zero: every gate and the head start at 0, so the blocks are identities and the logits are exactly 0
    logits = model(x)                                                          # (1, L, V)
    print(f"at init: max |logit| over real tokens = {logits[..., :-1].abs().max().item()}, "
          f"mask logit = {logits[0, 0, -1].item():g}; sigma changes nothing: "
          f"{max_diff(model(x, sigma=torch.tensor([0.0])), model(x, sigma=torch.tensor([3.0])))}")

    # a "trained" model: give the zero-initialised layers random weights so outputs depend on everything
    with torch.no_grad():
        for lin in [b.adaLN for b in model.blocks] + [model.adaLN_f, model.head]:
            lin.weight.normal_(0, 0.2)
            lin.bias.normal_(0, 0.2)
    with torch.no_grad():
        # 2) the attention knob: change the last token and see who notices
        y = x.clone()
        y[0, -1] = (x[0, -1] + 1) % 10
        for attn in ('causal', 'full'):
            d = (model(x, attn=attn) - model(y, attn=attn))[0, :-1].abs().max().item()
            print(f"attn={attn!r:8s}: changing the last token moves the earlier outputs by {d:.2e}")
        # 3) rotary encodes relative positions only: shifting every position by 100 changes nothing
        print(f"rotary: output(pos + 100) - output(pos) = {max_diff(model(x, pos=torch.arange(L) + 100), model(x)):.1e}")
        # ... so with full attention, permuting tokens together with their positions just permutes the output
        perm = torch.randperm(L)
        print(f"full attention, tokens and positions permuted together: "
              f"{max_diff(model(x[:, perm], pos=perm), model(x)[:, perm]):.1e}")
        # 4) the sigma knob: only Duo feeds it, and now it matters
        print(f"sigma = 0 vs sigma = 3 (adaLN is no longer zero): "
              f"{max_diff(model(x, sigma=torch.tensor([0.0])), model(x, sigma=torch.tensor([3.0]))):.2e}")

        # 5) Eso-LM: mask some tokens, sort clean first (random order inside each group), attend causally in that order
        g = torch.Generator().manual_seed(args.seed + 1)
        masked = torch.rand(L, generator=g) < 0.5                              # (L,)
        z = x.masked_fill(masked, cfg.mask_id)
        sort_idx = (masked.float() + 0.9 * torch.rand(L, generator=g)).argsort()  # original position of each slot
        rank = sort_idx.argsort()                                              # slot of each original position
        eso_mask = rank[None, :] <= rank[:, None]                              # (L, L): query i sees key j
        sorted_out = model(z[:, sort_idx], attn='causal', pos=sort_idx)        # in sorted coordinates
        print(f"Eso-LM: causal over the sorted order == boolean mask in original order: "
              f"{max_diff(sorted_out[:, rank], model(z, attn=eso_mask)):.1e}")

    panels = [('AR: causal', torch.ones(L, L, dtype=torch.bool).tril(), None),
              ('MDLM, Duo: full', torch.ones(L, L, dtype=torch.bool), None),
              ('Eso-LM diffusion: causal over\nclean-first order (original positions)', eso_mask, masked),
              (f'Eso-LM sequential part: [z0 ; x0],\n2L = {2 * L} rows', eso.sequential_mask(L), None)]
    fig, axes = lu.plt.subplots(1, 4, figsize=(15, 4.2))
    for ax, (title, m, is_masked) in zip(axes, panels):
        ax.imshow(m.numpy(), cmap='Blues', vmin=0, vmax=1.4)
        ax.set_title(title, fontsize=9, pad=14)
        ax.set_xlabel('key (attended to)')
        ax.set_ylabel('query', labelpad=14 if is_masked is not None else 4)
        ax.set_xticks([])
        ax.set_yticks([])
        if is_masked is not None:  # mark masked positions, write each position's slot in the sorted order
            for i in range(L):
                color = 'crimson' if is_masked[i] else 'black'
                ax.text(i, -0.7, f"{rank[i].item()}", ha='center', va='bottom', fontsize=7, color=color)
                ax.text(-0.7, i, 'm' if is_masked[i] else 'c', ha='right', va='center', fontsize=7, color=color)
    axes[3].axhline(L - 0.5, color='gray', lw=0.8)
    axes[3].axvline(L - 0.5, color='gray', lw=0.8)
    axes[2].text(L / 2, L + 1.8, 'c / m (red): clean / masked position;\nnumbers on top: its slot in the sorted order',
                 ha='center', va='top', fontsize=7)
    fig.suptitle('Who attends to whom (blue = may attend)', fontsize=11)
    lu.savefig(fig, args, '01_attention_masks.png')


if __name__ == '__main__':
    main()
