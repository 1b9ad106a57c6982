"""Run plumbing shared by train.py, sample.py and sweep.py: the family table, torchrun/DDP set-up, rank-0 printing,
device and precision choice, run metadata, and checkpoints (atomic save, validated load)."""
import os
import platform
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import asdict

import torch
import torch.distributed as dist

from .config import ModelConfig
from .model import Model

from . import ar, duo, eso, mdlm

# the four families: flat modules with the same surface (OPTIONS, loss, sample), chosen by one dict lookup
FAMILIES = {'ar': ar, 'mdlm': mdlm, 'duo': duo, 'eso': eso}
FAMILY_NAMES = tuple(FAMILIES)


def get_family(name):
    if name not in FAMILIES:
        raise ValueError(f"unknown --family {name!r}; valid families: {', '.join(FAMILY_NAMES)}")
    return FAMILIES[name]


# -----------------------------------------------------------------------------
# processes and devices

def init_distributed(device='auto'):
    """Read torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE); one code path for 1 and N processes.
    Returns (ddp, rank, local_rank, world_size, device)."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    ddp = int(os.environ.get('RANK', -1)) != -1
    if not ddp:
        return False, 0, 0, 1, torch.device(device)
    rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    else:  # CPU processes share the cores: give each its share instead of oversubscribing
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get('LOCAL_WORLD_SIZE', world))))
    dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    return True, rank, local_rank, world, torch.device(device)


def cleanup_distributed():
    if dist.is_initialized():
        dist.destroy_process_group()


def print0(*args, **kwargs):
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs)


def autocast_context(device, dtype):
    """bf16/fp16 autocast around the forward on GPU; plain fp32 elsewhere (bf16 on this CPU is ~30x slower)."""
    if dtype == 'float32' or device.type == 'cpu':
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def resolve_dtype(dtype, device):
    if dtype != 'auto':
        return dtype
    if device.type == 'cuda' and torch.cuda.is_bf16_supported():
        return 'bfloat16'
    return 'float32'


def run_info(device):
    """What a log or checkpoint needs to say where it came from: git commit and dirty flag, versions, device."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*a):
        try:
            return subprocess.run(['git', *a], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ''
    return dict(git_commit=git('rev-parse', 'HEAD') or None, git_dirty=bool(git('status', '--porcelain')),
                torch=torch.__version__, python=platform.python_version(), argv=sys.argv,
                device=torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu')


# -----------------------------------------------------------------------------
# checkpoints

def save_checkpoint(path, ckpt):
    """Write to a temporary file, then rename: a crash during the save never destroys the last good checkpoint."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def make_checkpoint(model, cfg, args, family_name, options, tokenizer_name, **extra):
    return dict(nanodllm_checkpoint=1, model=model.state_dict(), model_config=asdict(cfg), family=family_name,
                options=options, tokenizer=tokenizer_name, args=vars(args), **extra)


def load_checkpoint(path, device='cpu'):
    """Load and validate a checkpoint written by train.py -> (model in eval mode, checkpoint dict)."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}: train one with `python train.py --out-dir ...` "
                         f"or pass --ckpt <out_dir>/ckpt.pt")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}); "
                         f"it may be truncated: use another checkpoint or retrain") from None
    if not isinstance(ckpt, dict) or ckpt.get('nanodllm_checkpoint') != 1:
        raise SystemExit(f"error: {path} is not a nanodllm checkpoint (written by train.py)")
    cfg = ModelConfig(**ckpt['model_config'])
    model = Model(cfg).to(device)
    try:
        model.load_state_dict(ckpt['model'])
    except RuntimeError as e:
        raise SystemExit(f"error: the weights in {path} do not match its model config {ckpt['model_config']}: "
                         f"{str(e).splitlines()[0][:200]}; the checkpoint is corrupt or was edited") from None
    return model.eval(), ckpt
