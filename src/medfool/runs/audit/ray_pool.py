"""Units on Ray workers: a local Ray instance (``--workers N``) or a cluster (``--ray-address``).

Ray is optional (``pip install 'medfool[ray]'``): without it ``--workers`` says so in one line
and the audit runs in this process. The driver alone writes the store, one transaction per
unit, so a unit retried after a lost worker is written once, and a killed driver resumes with
the units it has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from medfool.errors import ConfigError
from medfool.runs.audit.cells import Commit, Done, Executor, InProcess, Started, WorkerSpec, run_unit
from medfool.runs.audit.units import Unit
from medfool.runs.audit.worker import AuditWorker
from medfool.runs.common import Say
from medfool.runs.ray_start import ray_installed, start_ray

__all__ = ["RayWorkers", "choose_executor"]

log = logging.getLogger("medfool")


@dataclass
class _Flight:
    unit: Unit
    worker: int
    retries: int


@dataclass
class RayWorkers:
    """Units on ``workers`` Ray actors: a local Ray instance, or the cluster at ``address``.
    Units marked ``local`` (they write files in the run's folder) run in this process; a unit
    whose ``after`` is not committed yet waits for it. A worker lost in the middle of a unit is
    replaced and the unit sent again (up to ``max_retries`` times)."""

    spec: WorkerSpec
    workers: int
    address: str | None = None
    max_retries: int = 3
    gpus: float = 0.0
    pids: list[int] = field(default_factory=list)  # the workers' process ids (for tests that kill one)

    @property
    def where(self) -> str:
        return f"{self.workers} Ray workers" + (f" at {self.address}" if self.address else "")

    def run(self, units: Sequence[Unit], seed: int, started: Started, commit: Commit,
            artifact: Callable[[str], bytes]) -> None:
        import ray

        own = start_ray(self.address, self.workers, self.spec.threads, self.spec.device)
        try:
            self._run(ray, [u for u in units if not u.local], started, commit, artifact)
            for unit in units:  # files in the run's folder: written by this process
                if unit.local:
                    started(unit)
                    commit(run_unit(unit, seed))
        finally:
            if own:
                ray.shutdown()

    def _actor(self, ray: object) -> object:
        actor_class = ray.remote(AuditWorker)  # type: ignore[attr-defined]
        return actor_class.options(num_cpus=self.spec.threads, num_gpus=self.gpus, max_restarts=0).remote(self.spec)

    def _run(self, ray: object, units: list[Unit], started: Started, commit: Commit,
             artifact: Callable[[str], bytes]) -> None:
        """Kept whole: one scheduling loop (an idle worker takes the next unit whose ``after`` is
        done; a result is committed as it arrives; a lost worker is replaced and its unit sent
        again)."""
        from ray.exceptions import RayActorError, RayTaskError

        get, wait = ray.get, ray.wait  # type: ignore[attr-defined]
        actors = [self._actor(ray) for _ in range(min(self.workers, max(1, len(units))))]
        self.pids = [get(a.pid.remote()) for a in actors]  # type: ignore[attr-defined]
        planned = {u.name for u in units}
        pending: list[tuple[Unit, int]] = [(u, 0) for u in units]
        done: set[str] = set()
        flying: dict[object, _Flight] = {}
        idle = list(range(len(actors)))
        while pending or flying:
            for item in [p for p in pending if p[0].after is None or p[0].after in done or p[0].after not in planned]:
                if not idle:
                    break
                pending.remove(item)
                unit, k = item[0], idle.pop(0)
                started(unit)
                needed = artifact(unit.needs) if unit.needs else None
                flying[actors[k].run.remote(unit.name, needed)] = _Flight(unit, k, item[1])  # type: ignore[attr-defined]
            if not flying:
                raise ConfigError(f"units wait for units that never finish: {[u.name for u, _ in pending]}")
            (ref,), _ = wait(list(flying), num_returns=1)
            flight = flying.pop(ref)
            try:
                result: Done = get(ref)
            except RayActorError as exc:
                if flight.retries >= self.max_retries:
                    raise ConfigError(f"unit {flight.unit.name} lost its worker {flight.retries + 1} times: {exc}") \
                        from None
                log.warning("a worker was lost in unit %s; starting another and sending the unit again",
                            flight.unit.name)
                actors[flight.worker] = self._actor(ray)
                self.pids[flight.worker] = get(actors[flight.worker].pid.remote())  # type: ignore[attr-defined]
                pending.insert(0, (flight.unit, flight.retries + 1))
            except RayTaskError as exc:  # the unit itself failed: raise what the in-process run would
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, BaseException) else exc) from None
            else:
                result.retries = flight.retries
                commit(result)
                done.add(result.name)
            idle.append(flight.worker)


def choose_executor(workers: int | None, address: str | None, spec: WorkerSpec | None, say: Say) -> Executor:
    """In process unless ``workers`` or ``address`` asks for Ray and Ray is installed."""
    if (not workers and not address) or not ray_installed(say):
        return InProcess()
    if spec is None:
        raise ConfigError("Ray workers need the model as a file they can load")
    return RayWorkers(spec, workers or 1, address, gpus=1.0 if spec.device == "cuda" else 0.0)
