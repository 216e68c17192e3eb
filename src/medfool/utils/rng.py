"""Random numbers per image, so that an image's result never depends on its neighbours.

An attack that draws its random numbers from one generator for the whole batch gives image
``i`` different numbers depending on how many images came before it and how many are still
active: the same image attacked alone, in another batch or after a restart of the run gets
another answer. :class:`ImageStreams` gives every image its own stream instead, keyed by the
run seed and the image's id (its index in the dataset): the ``t``-th draw an image makes is
a pure function of ``(seed, id, t)`` and of the shape drawn, computed by an integer hash
(counter-based, like Philox), all images at once and with no Python loop over them.

Attacks see a :class:`Draw`: ``rand``, ``randn`` and ``randint`` over a batch of rows.
``bulk=True`` (for draws of many numbers per image, such as HopSkipJump's random directions)
takes each row from a CPU generator seeded with that row's key instead: still a pure function
of ``(seed, id, t)``, one generator call per row, and far cheaper per number than the hash.
``ImageStreams.rows(idx)`` draws for the images at positions ``idx`` of the batch;
:class:`GeneratorDraw` wraps a ``torch.Generator`` for work that is batch-level by nature
(crafting a universal perturbation or patch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

__all__ = ["Draw", "GeneratorDraw", "ImageStreams", "as_ids", "mix32"]

_MASK = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), without int64 overflow: split x into 16-bit halves."""
    lo = (x & 0xFFFF) * c
    hi = ((x >> 16) * c) & 0xFFFF
    return (lo + (hi << 16)) & _MASK


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with full avalanche (Wellons' "lowbias32"), on int64 tensors."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _bits(keys: torch.Tensor, count: int) -> torch.Tensor:
    """(k, count) 32-bit hashes: element j of row r is mix(key_r ^ mix(j))."""
    j = mix32(torch.arange(count, device=keys.device, dtype=torch.int64) * 0x9E3779B9 + 1)
    return mix32(keys[:, None] ^ j[None, :])


def _uniform(keys: torch.Tensor, count: int) -> torch.Tensor:
    """(k, count) float32 in [0, 1), 24 bits each."""
    return (_bits(keys, count) >> 8).to(torch.float32) * (1.0 / (1 << 24))


def _per_row(keys: torch.Tensor, count: int,
             fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """(k, count) numbers, row r from a CPU generator seeded with key r (one generator call per
    row: the loop is over rows, each drawing ``count`` numbers at once)."""
    out = torch.empty(keys.numel(), count)
    gen = torch.Generator()
    for r, key in enumerate(keys.tolist()):
        gen.manual_seed(key)
        out[r] = fn(count, generator=gen)
    return out


class Draw(Protocol):
    """Random numbers for a batch of rows: each method returns a tensor of ``shape`` (its first
    dimension is the number of rows) on ``device``."""

    device: torch.device

    def rand(self, *shape: int, bulk: bool = False) -> torch.Tensor: ...

    def randn(self, *shape: int, bulk: bool = False) -> torch.Tensor: ...

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor: ...


class GeneratorDraw:
    """A :class:`Draw` from one ``torch.Generator`` (batch-level randomness)."""

    def __init__(self, gen: torch.Generator, device: torch.device | str = "cpu") -> None:
        self.gen = gen
        self.device = torch.device(device)

    def rand(self, *shape: int, bulk: bool = False) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen).to(self.device)

    def randn(self, *shape: int, bulk: bool = False) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen).to(self.device)

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=self.gen).to(self.device)


class _Rows:
    """A :class:`Draw` over chosen images of an :class:`ImageStreams` (one row per image, or
    ``copies`` consecutive rows per image)."""

    def __init__(self, streams: ImageStreams, idx: torch.Tensor, copies: int) -> None:
        self.streams, self.idx, self.copies = streams, idx, copies
        self.device = streams.device

    def _keys(self, shape: tuple[int, ...]) -> torch.Tensor:
        rows = self.idx.numel() * self.copies
        if not shape or shape[0] != rows:
            raise ValueError(f"a per-image draw must have one row per image ({rows}), got shape {shape}")
        keys = self.streams.next_keys(self.idx)
        if self.copies > 1:  # copy c of image i: its own sub-stream
            c = torch.arange(self.copies, device=keys.device, dtype=torch.int64)
            keys = mix32(keys[:, None] ^ mix32(c + 0x51ED27)[None, :]).flatten()
        return keys

    def rand(self, *shape: int, bulk: bool = False) -> torch.Tensor:
        keys = self._keys(shape)
        m = math.prod(shape[1:])
        if bulk:
            return _per_row(keys, m, torch.rand).view(shape).to(self.device)
        return _uniform(keys, m).view(shape).to(self.device)

    def randn(self, *shape: int, bulk: bool = False) -> torch.Tensor:
        keys = self._keys(shape)
        m = math.prod(shape[1:])
        if bulk:
            return _per_row(keys, m, torch.randn).view(shape).to(self.device)
        u = _uniform(keys, 2 * m)
        u1, u2 = u[:, :m].clamp_min(1e-7), u[:, m:]  # Box-Muller
        z = (-2 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)
        return z.view(shape).to(self.device)

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        keys = self._keys(shape)
        u = _uniform(keys, math.prod(shape[1:]))
        out = (low + (u * (high - low)).floor().to(torch.int64)).clamp_max(high - 1)
        return out.view(shape).to(self.device)


class ImageStreams:
    """One random stream per image of a batch, keyed by ``(seed, ids[i])``.

    ``rows(idx)`` returns a :class:`Draw` for the images at batch positions ``idx``; every call
    of one of its methods advances those images' streams by one, and only theirs.
    """

    def __init__(self, seed: int, ids: torch.Tensor, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        ids = ids.to(torch.int64).cpu()
        seed_key = mix32(torch.tensor([seed & _MASK], dtype=torch.int64)) ^ mix32(
            torch.tensor([(seed >> 32) & _MASK], dtype=torch.int64) + 0x632BE5AB)
        self.keys = mix32(seed_key ^ mix32(ids & _MASK) ^ mix32((ids >> 32) + 0x2545F491))
        self.counts = torch.zeros(ids.numel(), dtype=torch.int64)
        self.ids = ids
        self.seed = seed
        # batch-level randomness (universal attacks), seeded from the run seed alone
        self.generator = torch.Generator().manual_seed(seed & ((1 << 63) - 1))

    def __len__(self) -> int:
        return int(self.keys.numel())

    def next_keys(self, idx: torch.Tensor) -> torch.Tensor:
        """(k,) the keys of the next draw of images ``idx`` (distinct positions), advancing them."""
        i = idx.to(torch.int64).cpu()
        keys = mix32(self.keys[i] ^ mix32(self.counts[i] * 0x27D4EB2F + 0x165667B1))
        self.counts[i] += 1
        return keys

    def rows(self, idx: torch.Tensor | None = None, copies: int = 1) -> Draw:
        """A draw for the images at positions ``idx`` (all when None), ``copies`` rows each."""
        if idx is None:
            idx = torch.arange(len(self))
        return _Rows(self, idx, copies)


def as_ids(ids: torch.Tensor | list[int] | range | None, n: int) -> torch.Tensor:
    """Image ids for a batch of n: the given dataset indices, or 0..n-1."""
    if ids is None:
        return torch.arange(n, dtype=torch.int64)
    t = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.int64).flatten().cpu()
    if t.numel() != n:
        raise ValueError(f"ids must name one image per row ({n}), got {t.numel()}")
    if t.unique().numel() != n:
        raise ValueError("ids must be distinct: each image draws from its own random stream")
    return t
