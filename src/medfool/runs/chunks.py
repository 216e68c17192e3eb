"""The cells of ``medfool attack`` and ``medfool defend evaluate``: one piece of work (an attack
at one budget; a defence's three attackers at one budget) on one chunk of images.

Each image draws its randomness from its own stream (the run's seed and its dataset index), so
a chunk's results are the same whichever process computes them and whatever chunks the images
are cut into. :class:`InProcessChunks` runs the chunks here, one after the other (the default);
:class:`RayChunks` sends them to Ray actors that hold each model once (``--workers N`` on this
machine, ``--ray-address`` on a cluster) and sends a chunk again when its worker is lost. The
driver joins the chunks in order and writes every output itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Protocol, TypeVar

import torch

from medfool.attacks.base import Attack, AttackResult, TargetSpec, Victim
from medfool.attacks.ensemble import members
from medfool.defences.evaluation import Held, attack_defence, worst_case
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier
from medfool.runs.ray_start import ray_installed, start_ray, threads_per_worker
from medfool.utils.device import resolve_device
from medfool.utils.progress import progress
from medfool.vocab import Device, Preset

__all__ = ["ADAPTIVE_EOT", "Chunk", "ChunkRunner", "InProcessChunks", "RayChunks", "VictimSpec", "Work",
           "attack_chunk", "choose_runner", "chunks_of", "defence_chunk", "ensemble_chunk", "join_held", "load_spec",
           "on_cpu"]

log = logging.getLogger("medfool")

# EOT draws per step when a defended model is attacked through its defence
ADAPTIVE_EOT = 8


@dataclass(frozen=True)
class Chunk:
    """One cell's images: pixels, labels, target (None, a class, per-image classes or
    'least-likely') and their dataset indices (which name their random streams)."""

    x: torch.Tensor
    y: torch.Tensor
    target: TargetSpec
    ids: torch.Tensor


def chunks_of(x: torch.Tensor, y: torch.Tensor, target: TargetSpec, ids: torch.Tensor, size: int) -> list[Chunk]:
    """The images cut into chunks of ``size`` (bounded memory, and the unit of work of a worker)."""
    out = []
    for start in range(0, x.shape[0], size):
        sl = slice(start, start + size)
        tgt = target[sl] if isinstance(target, torch.Tensor) else target
        out.append(Chunk(x[sl], y[sl], tgt, ids[sl]))
    return out


def attack_chunk(attack: Attack, model: Victim, chunk: Chunk, seed: int) -> AttackResult:
    """The attack on one chunk. A defended model (one that adapts) is attacked twice, on its
    deployed gradients and through its defence (BPDA, EOT), and each image keeps its worst case,
    judged by the model as deployed."""
    r = attack(model, chunk.x, chunk.y, target=chunk.target, seed=seed, ids=chunk.ids)
    if isinstance(model, Classifier) and model.adapts and not attack.queries_only:
        with model.adaptive(eot=ADAPTIVE_EOT) as view:
            r = AttackResult.worst_of([r, attack(view, chunk.x, chunk.y, target=chunk.target, seed=seed,
                                                 ids=chunk.ids)])
    return r


R = TypeVar("R")


def on_cpu(value: R) -> R:
    """``value`` with its tensors on the CPU (a GPU worker's result travels to a driver without
    one): a tensor, an attack result, or a tuple of them."""
    if isinstance(value, torch.Tensor):
        return value.cpu()  # type: ignore[return-value]
    if isinstance(value, AttackResult):
        moved = {f.name: getattr(value, f.name).cpu() for f in fields(value)
                 if isinstance(getattr(value, f.name), torch.Tensor)}
        extras = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in value.extras.items()}
        return replace(value, **moved, extras=extras)  # type: ignore[return-value]
    if isinstance(value, tuple):
        items = [on_cpu(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # type: ignore[return-value]
    return value


Work = Callable[[Victim, Chunk, int], R]
"""What a cell computes: a picklable function of the model, one chunk and the run's seed."""


def load_spec(spec: VictimSpec) -> Victim:
    """The model a spec names: a file (loaded here), or the model object itself."""
    if spec.obj is not None:
        return spec.obj
    from medfool.models import load_classifier
    from medfool.runs.images import load_victim

    if spec.queries_only:
        return load_victim(spec.model, spec.device, spec.labels_only)
    return load_classifier(spec.model, device=resolve_device(spec.device))[0]


class ChunkRunner(Protocol):
    """Runs a cell's work over chunks and returns the results in order; opened once for a whole
    run (a Ray runner starts its workers once). Models are registered under a key first."""

    @property
    def where(self) -> str: ...

    def __enter__(self) -> ChunkRunner: ...

    def __exit__(self, *exc: object) -> None: ...

    def register(self, key: str, spec: VictimSpec) -> None: ...

    def run(self, work: Work[R], key: str, chunks: list[Chunk], seed: int, desc: str) -> list[R]: ...


@dataclass(frozen=True)
class VictimSpec:
    """A model for the cells: a file (``model``, loaded where the cell runs, on ``device``,
    labels only or not) or, for a model built in memory (a defence), the object itself (``obj``,
    sent to each worker once)."""

    model: str = ""
    device: Device = "cpu"
    labels_only: bool = False
    queries_only: bool = False
    obj: Victim | None = None


@dataclass
class InProcessChunks:
    """The chunks in this process, one after the other."""

    where: str = "this process"
    models: dict[str, Victim] = field(default_factory=dict)

    def __enter__(self) -> InProcessChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def register(self, key: str, spec: VictimSpec) -> None:
        self.models[key] = load_spec(spec)

    def run(self, work: Work[R], key: str, chunks: list[Chunk], seed: int, desc: str) -> list[R]:
        model = self.models[key]
        return [work(model, c, seed) for c in progress(chunks, desc=desc, unit="batch")]


class ChunkWorker:
    """A Ray actor: holds the registered models (each loaded once) and runs the cells it is sent."""

    def __init__(self, threads: int) -> None:
        torch.set_num_threads(threads)  # N workers never oversubscribe the cores
        self.models: dict[str, Victim] = {}

    def register(self, key: str, spec: VictimSpec) -> None:
        self.models[key] = load_spec(spec)

    def run(self, work: Work[R], key: str, chunk: Chunk, seed: int) -> R:
        model = self.models[key]
        dev = getattr(model, "device", torch.device("cpu"))
        moved = Chunk(chunk.x.to(dev), chunk.y.to(dev),
                      chunk.target.to(dev) if isinstance(chunk.target, torch.Tensor) else chunk.target, chunk.ids)
        return on_cpu(work(model, moved, seed))

    def pid(self) -> int:
        return os.getpid()


@dataclass
class RayChunks:
    """Chunks on ``workers`` Ray actors (a local Ray instance, or the cluster at ``address``),
    ``threads`` torch threads each, one GPU each when ``device`` is cuda. A worker lost in the
    middle of a chunk is replaced (with every registered model) and the chunk sent again (up to
    ``max_retries`` times); results come back in the chunks' order."""

    workers: int
    threads: int = 1
    device: Device = "cpu"
    address: str | None = None
    max_retries: int = 3
    pids: list[int] = field(default_factory=list)
    retries: int = 0
    finished: int = 0  # chunks returned so far in this run (tests kill a worker once one has)
    on_start: Callable[[list[int]], None] | None = None  # told the workers' process ids (tests kill one)

    @property
    def where(self) -> str:
        return f"{self.workers} Ray workers" + (f" at {self.address}" if self.address else "")

    def __enter__(self) -> RayChunks:
        import ray

        self._own = start_ray(self.address, self.workers, self.threads, self.device)
        try:
            self._specs: dict[str, object] = {}  # key -> the spec in Ray's object store
            self._remote = ray.remote(ChunkWorker).options(num_cpus=self.threads, max_restarts=0,
                                                           num_gpus=1 if self.device == "cuda" else 0)
            self._actors = [self._remote.remote(self.threads) for _ in range(self.workers)]
            self.pids = [self._pid(a) for a in self._actors]
        except BaseException:
            self.__exit__()
            raise
        if self.on_start:
            self.on_start(list(self.pids))
        return self

    def register(self, key: str, spec: VictimSpec) -> None:
        import ray

        self._specs[key] = ray.put(spec)
        ray.get([a.register.remote(key, self._specs[key]) for a in self._actors])  # type: ignore[attr-defined]

    def _replace(self, w: int) -> None:
        """A new actor in place of lost worker ``w``, with every registered model."""
        import ray

        self._actors[w] = self._remote.remote(self.threads)
        self.pids[w] = self._pid(self._actors[w])
        ray.get([self._actors[w].register.remote(k, ref) for k, ref in self._specs.items()])  # type: ignore[attr-defined]

    @staticmethod
    def _pid(actor: object, wait_s: float = 600) -> int:
        import ray
        from ray.exceptions import GetTimeoutError

        ref: ray.ObjectRef[int] = actor.pid.remote()  # type: ignore[attr-defined]
        try:
            return ray.get(ref, timeout=wait_s)
        except GetTimeoutError:
            raise ConfigError(f"a Ray worker did not start within {wait_s:g} s (is the cluster busy?)") from None

    def __exit__(self, *exc: object) -> None:
        import ray

        for actor in getattr(self, "_actors", []):  # a shared Ray instance gets its CPUs back
            ray.kill(actor)
        self._actors = []
        if self._own:
            ray.shutdown()

    def run(self, work: Work[R], key: str, chunks: list[Chunk], seed: int, desc: str) -> list[R]:
        """Kept whole: one scheduling loop (an idle worker takes the next chunk; a lost worker is
        replaced and its chunk sent again; the work's own errors are raised as they are)."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        results: dict[int, R] = {}
        self.finished = 0
        pending = [(k, 0) for k in range(len(chunks))]
        flying: dict[object, tuple[int, int, int]] = {}  # ref -> (chunk, worker, retries)
        idle = list(range(len(self._actors)))
        bar = progress(total=len(chunks), desc=desc, unit="batch")
        while pending or flying:
            while pending and idle:
                (k, tries), w = pending.pop(0), idle.pop(0)
                ref = self._actors[w].run.remote(work, key, chunks[k], seed)  # type: ignore[attr-defined]
                flying[ref] = (k, w, tries)
            (ref,), _ = ray.wait(list(flying), num_returns=1)
            k, w, tries = flying.pop(ref)
            try:
                results[k] = ray.get(ref)
                self.finished += 1
                bar.update(1)
            except RayActorError as exc:
                if tries >= self.max_retries:
                    raise ConfigError(f"chunk {k} lost its worker {tries + 1} times: {exc}") from None
                log.warning("a worker was lost in chunk %d; starting another and sending the chunk again", k)
                self.retries += 1
                self._replace(w)
                pending.insert(0, (k, tries + 1))
            except RayTaskError as exc:  # the attack itself failed: raise what the in-process run would
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, BaseException) else exc) from None
            idle.append(w)
        bar.close()
        return [results[k] for k in range(len(chunks))]


def choose_runner(workers: int | None, address: str | None, threads: int | None, device: Device,
                  say: Callable[[str], None]) -> ChunkRunner:
    """In process unless ``workers`` or ``address`` asks for Ray and Ray is installed (without
    it, one line says so and the run goes on here)."""
    if (not workers and not address) or not ray_installed(say):
        return InProcessChunks()
    n = workers or 1
    per = threads or threads_per_worker(n)
    return RayChunks(n, per, "cuda" if resolve_device(device).type == "cuda" else "cpu", address)


def defence_chunk(eps: float, preset: Preset, eot: int, model: Victim, chunk: Chunk, seed: int) -> Held:
    """A defence's three attackers (naive, masking check, adaptive) at ``eps`` on one chunk."""
    assert isinstance(model, Classifier)
    return attack_defence(model, chunk.x, chunk.y, chunk.ids.tolist(), eps, preset=preset, seed=seed, eot=eot)


def ensemble_chunk(eps: float, preset: Preset, model: Victim, chunk: Chunk, seed: int) -> torch.Tensor:
    """Which images of the chunk the (undefended) model keeps under the whole ensemble at ``eps``."""
    assert isinstance(model, Classifier)
    ok, _ = worst_case(model, model, members(preset, model.task, eps, "linf"), chunk.x, chunk.y, chunk.ids.tolist(),
                       seed)
    return ok


def join_held(parts: list[Held]) -> Held:
    return Held(*(torch.cat([getattr(p, f) for p in parts]) for f in Held._fields))
