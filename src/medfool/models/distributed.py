"""A data-parallel team over torch.distributed: the :class:`medfool.models.train.Team` that
:func:`medfool.models.train.fit` uses when several processes train one model.

The process group is set up by whoever started the processes (Ray Train, ``torchrun``). The
gradients are averaged with one all-reduce per step, as DistributedDataParallel does, but
without DDP's wrapper: adversarial training runs extra backward passes to craft its examples
(PGD's input gradients), and under DDP each of them would either synchronise the weights'
gradients for nothing or break DDP's one-backward-per-forward bookkeeping. Averaging explicitly
after the training loss's backward pass is the same arithmetic at one synchronisation per step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["TorchTeam"]


class TorchTeam:
    """This process's place in the default torch.distributed process group."""

    def __init__(self) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("TorchTeam needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    def average_gradients(self, params: list[torch.nn.Parameter], n_local: int, n_batch: int) -> None:
        """Each member's gradient is of its mean loss over ``n_local`` images: weight it by
        ``n_local``, sum over the members in one flat all-reduce, divide by the batch size. A
        parameter without a gradient on a member counts as zero there; one without a gradient on
        every member keeps none (the optimiser skips it, as it would in one process)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        has = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device if grads else "cpu")
        flat = torch.cat([*(g.reshape(-1) * float(n_local) for g in grads), has])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        n = len(params)
        flat[:-n] /= float(max(1, n_batch))
        offset = 0
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            count = g.numel()
            p.grad = flat[offset:offset + count].view_as(p).clone() if flat[-n + k] > 0 else None
            offset += count

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average BatchNorm's running statistics (each member saw only its share of the batches);
        its batch counter becomes the largest (a member left without images in a batch did not
        count it; one process would have). Other buffers (the normalisation constants) are equal
        everywhere and left alone: averaging equal floats can still move their last bit."""
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                for buf in (m.running_mean, m.running_var):
                    if buf is not None:
                        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                        buf /= self.size
                if m.num_batches_tracked is not None:
                    dist.all_reduce(m.num_batches_tracked, op=dist.ReduceOp.MAX)

    def share(self, row: dict[str, float]) -> dict[str, float]:
        box: list[dict[str, float]] = [row]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def describe(self) -> dict[str, Any]:
        return {"workers": self.size, "backend": str(dist.get_backend()),
                "gradients": "averaged over the workers by all-reduce after each step's backward pass",
                "batch": "each batch of the one-process order split across the workers (worker r takes images "
                         "r, r + N, ...)"}
