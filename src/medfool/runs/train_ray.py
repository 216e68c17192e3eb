"""Data-parallel training on Ray Train: ``medfool train --workers N`` and ``medfool defend
adv-train --workers N``.

Ray Train starts N workers and their torch.distributed process group (gloo on CPU, NCCL on
GPUs); each worker loads the data itself and runs the one training loop
(:func:`medfool.models.train.fit`) as a member of a :class:`~medfool.models.distributed.TorchTeam`:
the batch order of the one-process run, each batch split over the workers, gradients averaged
before every step. So N workers train the model one worker would, at the same batch size, epochs
and learning-rate schedule; what differs is the BatchNorm statistics (each worker normalises
its share of a batch) and the random draws of augmentation and crafting (one stream per
worker). Worker 0 writes the checkpoint; its epoch lines reach this process through a queue.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfool.errors import ConfigError, MedfoolError
from medfool.models import save_checkpoint
from medfool.models.train import Objective, TrainConfig, fit
from medfool.runs.common import DataSource, Say, log_epoch
from medfool.runs.ray_start import start_ray
from medfool.utils.io import atomic_write_json

if TYPE_CHECKING:
    from ray.train import Result
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

__all__ = ["Spread", "train_on_ray"]

log = logging.getLogger("medfool")


@dataclass(frozen=True)
class Spread:
    """Where a data-parallel run goes: ``workers`` on a local Ray instance, or on the cluster at
    ``address``; ``threads`` torch threads each; one GPU each when ``device`` is cuda."""

    workers: int
    address: str | None = None
    device: str = "cpu"
    threads: int = 1


def _member(config: dict[str, Any]) -> None:
    """One Ray Train worker: load the data, train as a team member; worker 0 reports the model."""
    import ray.train
    import torch

    from medfool.models.distributed import TorchTeam

    torch.set_num_threads(config["threads"])  # N workers never oversubscribe the cores
    if config.get("data_dir_env"):
        os.environ.setdefault("MEDFOOL_DATA_DIR", config["data_dir_env"])
    team = TorchTeam()
    data: DataSource = config["data"]
    dataset = data.load()
    objective: Objective | None = config["objective"]
    if objective is not None and team.rank > 0 and hasattr(objective, "seed"):
        # each worker crafts from its own random stream (worker 0 keeps the recorded seed)
        objective = replace(objective, seed=objective.seed + 7919 * team.rank)  # type: ignore[type-var]
    device = torch.device("cuda", torch.cuda.current_device()) if config["device"] == "cuda" else torch.device("cpu")
    queue = config["queue"]
    result = fit(dataset, config["cfg"], device=device, objective=objective, team=team,
                 on_epoch=(lambda row: queue.put(row)) if team.rank == 0 else None)
    if team.rank != 0:
        ray.train.report({"best_epoch": result.best_epoch})
        return
    with tempfile.TemporaryDirectory(prefix="medfool-train-") as folder:  # copied to Ray's storage by report
        save_checkpoint(result.model, Path(folder) / "model.safetensors", result.record)
        atomic_write_json(Path(folder) / "metrics.json", result.record)
        ray.train.report({"best_epoch": result.best_epoch}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _failure(exc: BaseException) -> BaseException:
    """What to raise for a failed run: a worker's own medfool error as it is (one line), else a
    short error naming the worker (Ray's message carries the remote tracebacks)."""
    failures = getattr(exc, "worker_failures", None) or {}
    for rank, failure in sorted(failures.items()):
        cause = getattr(failure, "cause", failure)
        if isinstance(cause, MedfoolError):
            return cause
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
        return RuntimeError(f"data-parallel training failed on worker {rank}: {first}")
    return RuntimeError(f"data-parallel training failed: {(str(exc).strip().splitlines() or [''])[0]}")


def _fit_following(trainer: TorchTrainer, queue: Queue) -> Result:
    """Run the trainer in a thread and print worker 0's epoch lines as they arrive."""
    from ray.util.queue import Empty

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while thread.is_alive() or queue.size():
        try:
            log_epoch(queue.get(timeout=1.0))
        except Empty:
            continue
    thread.join()
    if "error" in outcome:
        raise _failure(outcome["error"]) from None
    result: Result = outcome["result"]
    return result


def train_on_ray(data: DataSource, cfg: TrainConfig, out: Path, spread: Spread, objective: Objective | None = None,
                 say: Say | None = None) -> dict[str, Any]:
    """Train on ``spread.workers`` Ray workers; writes OUT/model.safetensors and OUT/metrics.json
    (the same files a one-process run writes) and returns the training record. Ray Train keeps
    its run in OUT/.ray-train while it runs (on a cluster, OUT must be on storage every node
    sees)."""
    try:
        import ray
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.util.queue import Queue
    except ImportError as exc:
        raise ConfigError(f"--workers needs Ray Train: pip install 'medfool[ray]' ({exc})") from None
    own = start_ray(spread.address, spread.workers, spread.threads, spread.device)
    storage = (out / ".ray-train").resolve()
    queue = None
    try:
        queue = Queue(actor_options={"num_cpus": 0})
        config = {"data": data, "cfg": cfg, "objective": objective, "threads": spread.threads,
                  "device": spread.device, "queue": queue, "data_dir_env": os.environ.get("MEDFOOL_DATA_DIR")}
        trainer = TorchTrainer(
            _member, train_loop_config=config,
            # worker 0 validates while the others wait in a broadcast: give a long validation room
            torch_config=TorchConfig(timeout_s=6 * 3600),
            scaling_config=ray.train.ScalingConfig(num_workers=spread.workers, use_gpu=spread.device == "cuda",
                                                   resources_per_worker={"CPU": spread.threads}),
            run_config=ray.train.RunConfig(storage_path=str(storage), name="run"))
        checkpoint = _fit_following(trainer, queue).checkpoint
        if checkpoint is None:
            raise RuntimeError("data-parallel training ended without a checkpoint from worker 0")
        out.mkdir(parents=True, exist_ok=True)
        with checkpoint.as_directory() as folder:
            for name in ("model.safetensors", "metrics.json"):
                tmp = out / f".{name}.part"
                shutil.copyfile(Path(folder) / name, tmp)
                os.replace(tmp, out / name)
        record: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    finally:
        if queue is not None:
            queue.shutdown()
        if own:
            ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    if say:
        say(f"trained on {spread.workers} Ray workers" + (f" at {spread.address}" if spread.address else ""))
    return record
