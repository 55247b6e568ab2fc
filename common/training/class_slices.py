"""Which weights belong to one output class: derived from the network, not from key names.

An element of a parameter belongs to class ``c`` when it influences output channel ``c`` and no
other: the gradient of a random projection of each output channel, on random inputs, is non-zero
on exactly the elements that channel depends on. A buffer (BatchNorm running mean / variance)
follows its layer's weight; every other element is shared (owner -1). For the U-Net this finds
the last convolution's per-class filters and biases: everything before it feeds every class.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

SHARED = -1


@torch.no_grad()
def _buffer_owners(model: nn.Module, owners: dict[str, np.ndarray]) -> None:
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._NormBase):
            continue
        dot = f"{prefix}." if prefix else ""
        weight = owners.get(f"{dot}weight")
        for buffer in ("running_mean", "running_var"):
            name = f"{dot}{buffer}"
            if getattr(module, buffer, None) is not None:
                owners[name] = (
                    weight.copy() if weight is not None else np.full(module.num_features, SHARED)
                )


def class_owners(model: nn.Module, *, size: int = 32, trials: int = 2) -> dict[str, np.ndarray]:
    """``state-dict name -> int array`` of the tensor's shape: the class an element belongs to,
    or :data:`SHARED`. ``size``: side of the random probe images (a multiple of the network's
    downsampling), with as many channels as the network's first convolution takes; the model
    itself is not changed."""
    probe = copy.deepcopy(model).train()
    params = dict(probe.named_parameters())
    generator = torch.Generator().manual_seed(0)
    influence: dict[str, torch.Tensor] | None = None
    in_channels = next(m for m in probe.modules() if isinstance(m, nn.Conv2d)).in_channels
    for _ in range(trials):
        x = torch.randn(2, in_channels, size, size, generator=generator)
        out = probe(x)
        # a random projection of each channel, not its plain sum: the sum of a batch-normalised
        # channel is 0 whatever its scale, so the scale's gradient would vanish
        projection = torch.randn(out.shape, generator=generator)
        classes = out.shape[1]
        if influence is None:
            influence = {
                n: torch.zeros(classes, *p.shape, dtype=torch.bool) for n, p in params.items()
            }
        for c in range(classes):
            probe.zero_grad(set_to_none=True)
            (out[:, c] * projection[:, c]).sum().backward(retain_graph=c < classes - 1)
            for name, p in params.items():
                if p.grad is not None:
                    influence[name][c] |= p.grad != 0
    assert influence is not None
    owners: dict[str, np.ndarray] = {}
    for name, hits in influence.items():
        count = hits.sum(0)
        owner = torch.where(count == 1, hits.int().argmax(0), torch.full_like(count, SHARED))
        owners[name] = owner.numpy().astype(np.int64)
    _buffer_owners(probe, owners)
    for name, value in probe.state_dict().items():  # num_batches_tracked and the like
        owners.setdefault(name, np.full(value.shape, SHARED, dtype=np.int64))
    return {name: owners[name] for name in model.state_dict()}
