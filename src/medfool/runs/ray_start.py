"""Starting (or joining) Ray for the scale-out paths: the audit's units, ``medfool attack`` and
``defend evaluate`` chunks, data-parallel training. One place decides what an absent Ray, an
unreachable cluster and workers that cannot be placed look like to the user: one line each."""

from __future__ import annotations

import os

from medfool.errors import ConfigError
from medfool.runs.common import Say

__all__ = ["ray_installed", "start_ray", "threads_per_worker"]


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` local workers: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def ray_installed(say: Say) -> bool:
    """Whether Ray can be imported; without it, one line says the run stays in this process."""
    try:
        import ray  # noqa: F401
    except ImportError:
        say("note: Ray is not installed (pip install 'medfool[ray]'): running in this process")
        return False
    return True


def start_ray(address: str | None, workers: int, threads: int, device: str) -> bool:
    """Start a local Ray instance sized for ``workers`` x ``threads`` CPUs (or join the cluster at
    ``address``; or use the one already running), then refuse workers it cannot place: they
    would wait for resources that never come. Returns whether this call started Ray (the caller
    shuts down only what it started)."""
    import ray

    own = not ray.is_initialized()
    if own:
        try:
            ray.init(address=address, num_cpus=None if address else workers * threads,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot start or join Ray at {address or 'this machine'}: "
                              f"{str(exc).splitlines()[0]}") from None
    have = ray.cluster_resources()
    gpus = workers if device == "cuda" else 0
    if have.get("GPU", 0) < gpus or have.get("CPU", 0) < workers * threads:
        if own:
            ray.shutdown()
        raise ConfigError(f"{workers} workers need {workers * threads} CPUs" + (f" and {gpus} GPUs" if gpus else "")
                          + f"; Ray has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs "
                            "(fewer --workers, --threads-per-worker or --device cpu)")
    return own
