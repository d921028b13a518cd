"""
More than one process: torchrun and accelerate launch start one a GPU, each with RANK, LOCAL_RANK and WORLD_SIZE.
Rank handling is these few functions and some `if rank == 0:` lines in train.py, not a framework; alone, a process
is rank 0 of 1 and nothing here waits for anyone.
"""

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from plumbing.errors import InputError


def init_distributed():
    """(rank, world size). Under a launcher, joins the process group (NCCL on GPUs, gloo on CPUs) with this rank's
    model on cuda:LOCAL_RANK; alone, (0, 1) and nothing to join."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank_world()


def rank_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def gather(obj):
    """Every rank's `obj`, in rank order; alone, [obj]. Every rank must call it: it is also a barrier."""
    if not dist.is_initialized():
        return [obj]
    objs = [None] * dist.get_world_size()
    dist.all_gather_object(objs, obj)
    return objs


def on_first_rank(fn, *args):
    """fn(*args) on rank 0 while the others wait; an InputError there stops every rank with its message."""
    error = None
    if rank_world()[0] == 0:
        try:
            fn(*args)
        except InputError as e:
            error = str(e)
    error = gather(error)[0]
    if error is not None:
        raise InputError(error)


def bare(net):
    """The model inside DDP."""
    return net.module if isinstance(net, DDP) else net

