"""Run plumbing shared by train.py, sample.py and sweep.py: torchrun/DDP set-up, rank-0 printing, device and
precision choice (checked: an unavailable device or a dtype the device cannot run is a one-line ValueError), run
metadata. The family table lives in families.py, checkpoints in checkpoint.py."""
import os
import platform
import subprocess
import sys
from contextlib import nullcontext

import torch
import torch.distributed as dist


# -----------------------------------------------------------------------------
# processes and devices

def resolve_device(name='auto'):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device; an unknown or unavailable one is a ValueError."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible to torch (torch.cuda.is_available() is "
                             f"False): use --device cpu, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1})")
    elif device.type == 'mps' and not torch.backends.mps.is_available():
        raise ValueError("--device mps: the Apple GPU backend is not available here: use --device cpu")
    elif device.type not in ('cpu', 'cuda', 'mps'):
        raise ValueError(f"unsupported --device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def init_distributed(device='auto'):
    """Read torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE); one code path for 1 and N processes.
    Returns (ddp, rank, local_rank, world_size, device). An unknown or unavailable device is a ValueError."""
    device = resolve_device(device)
    ddp = int(os.environ.get('RANK', -1)) != -1
    if not ddp:
        return False, 0, 0, 1, device
    rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    if device.type == 'cuda':
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} are visible; "
                             f"lower --nproc_per_node")
        device = torch.device(f'cuda:{local_rank}')
        torch.cuda.set_device(device)
    else:  # CPU processes share the cores: give each its share instead of oversubscribing
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get('LOCAL_WORLD_SIZE', world))))
    dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    return True, rank, local_rank, world, device


def any_rank(flag, ddp, device):
    """True on every rank if `flag` is True on any rank (one MAX all-reduce under DDP). Lets all processes stop
    together when one of them refuses to start, instead of the others waiting in a collective or crashing in it."""
    if not ddp:
        return bool(flag)
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup_distributed():
    """Leave the process group together: a barrier first, so that no rank tears gloo down while a peer is still in
    its last collective (which can abort the peer with 'terminate called without an active exception')."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code=0, together=True):
    """Exit with `code`; in a process of a torchrun job, leave the process group first (together: after a barrier,
    when every rank exits at this point; else at once, e.g. a refusal) and end with os._exit once the output is
    flushed: gloo's C++ threads can abort the interpreter's own teardown even after destroy_process_group
    ('terminate called without an active exception', SIGABRT), which turns a clean exit, or a one-line refusal, into
    a crash that torchrun reports with a page of traceback."""
    if dist.is_initialized():
        if together:
            cleanup_distributed()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)


def print0(*args, **kwargs):
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs)


DTYPES = ('auto', 'float32', 'bfloat16', 'float16')


def autocast_context(device, dtype):
    """bf16/fp16 autocast around the forward on a GPU; plain fp32 otherwise (resolve_dtype refuses the rest)."""
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def resolve_dtype(dtype, device):
    """--dtype -> the dtype this run really uses: 'auto' is bf16 on a GPU that has it, else fp32. A dtype the
    device cannot run well is a ValueError (never a silent fp32 run recorded as bf16). float16 needs loss scaling:
    train.py turns on a GradScaler for it."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype == 'auto':
        return 'bfloat16' if device.type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    if dtype != 'float32' and device.type != 'cuda':
        raise ValueError(f"--dtype {dtype} on {device.type}: nanodllm uses mixed precision on CUDA GPUs only (on a "
                         f"CPU, bf16 autocast runs ~30x slower than fp32): use --dtype float32 (or auto)")
    if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} has no bf16 support: use --dtype "
                         f"float16 (loss-scaled) or float32")
    return dtype


def free_memory(device):
    """Bytes free on `device` now: the GPU's free memory, or the host's available memory (MemAvailable, which
    counts reclaimable caches) for CPU and MPS."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    free = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    try:
        with open('/proc/meminfo') as f:
            return max(free, next(int(line.split()[1]) * 1024 for line in f if line.startswith('MemAvailable')))
    except (OSError, StopIteration, ValueError):
        return free


def run_info(device):
    """What a log or checkpoint needs to say where it came from: git commit and dirty flag, versions, device."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*a):
        try:
            return subprocess.run(['git', *a], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ''
    return dict(git_commit=git('rev-parse', 'HEAD') or None, git_dirty=bool(git('status', '--porcelain')),
                torch=str(torch.__version__), python=platform.python_version(), argv=sys.argv,
                device=torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu')
