"""``provgen batch --engine ray``: the batch's jobs as a Ray Dataset, run by a pool of actors.

Each actor (:class:`_RayWorker`) is a callable class given to ``Dataset.map_batches``: Ray builds it once per
actor, so the pipeline is loaded once per actor, and so is the provenance layer: its c2pa signer and its
registry connection are created inside the actor's own process (c2pa signers do not survive a fork; see
../shared/reference/c2pa.md). Jobs travel as pickled :class:`~provgen.core.jobs.Job` objects, results come back
as pickled :class:`~provgen.core.batch.JobResult` objects, in the order they finish (``iter_rows`` streams).

For several machines, every actor must reach the same registry (PostgreSQL: ``PROVGEN_REGISTRY_URL``), the
signing keys (``PROVGEN_HOME`` or ``--cert/--key`` paths) and the output folder (shared storage); see
docs/batch.md. ``PROVGEN_*`` and ``HF_*`` variables of the driver are passed to the workers.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provgen.core.errors import ProvgenError, ValidationError

if TYPE_CHECKING:
    from provgen.core.batch import JobResult
    from provgen.core.config import Settings
    from provgen.core.jobs import Job

__all__ = ["require_ray", "run_on_ray"]

INSTALL_HINT = "pip install 'provgen[ray]'"
#: environment variables of the driver that the workers get too
_PASSED_ENV = ("PROVGEN_", "HF_", "TRANSFORMERS_", "DIFFUSERS_")


def require_ray() -> None:
    """:raises ValidationError: Ray (with Ray Data) is not installed; the message says how to install it."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise ValidationError("engine", f"`ray` needs Ray Data, which is not installed; install it with: "
                                        f"{INSTALL_HINT}") from None


class _RayWorker:
    """One Ray actor: an Engine (pipeline cache, signer, registry connection) made in the actor's process."""

    def __init__(self, settings: Settings, device: str | None, dtype: str | None, out: str, threads: int) -> None:
        from provgen.core.batch_outdir import OutputLock
        from provgen.core.engine import Engine

        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        self._lock = OutputLock(Path(out))
        self._lock.shared()  # as local workers: a re-run does not sweep while this actor may still write
        self.engine = Engine(settings, device=device, dtype=dtype, progress=False)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        from provgen.core.batch import run_job

        return {"result": [pickle.dumps(run_job(self.engine, pickle.loads(blob))) for blob in batch["job"]]}


def run_on_ray(jobs: list[Job], settings: Settings, out: Path, *, workers: int, address: str | None,
               device: str | None, dtype: str | None) -> Iterator[JobResult]:
    """Run ``jobs`` on ``workers`` Ray actors (one GPU each when the cluster has GPUs); yield results as they
    finish. Starts a local Ray instance when none is running and ``address`` is ``None``."""
    import ray
    import ray.data

    started_here = False
    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith(_PASSED_ENV)}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ValidationError("address", f"cannot start or join Ray at {address or 'this machine'}: "
                                             f"{error}") from None
        started_here = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # provgen's own bar counts jobs
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # (it warns that the bars are off)
        resources = ray.cluster_resources()
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        # one CPU (and one GPU, if any) per actor; less when there are more actors than units, so that every
        # actor of the pool can be scheduled (they then share)
        num_cpus = min(1.0, cpus / workers)
        num_gpus = min(1.0, gpus / workers) if gpus else 0
        threads = max(1, int(cpus // workers)) if address is None else 1
        dataset = ray.data.from_items([{"job": pickle.dumps(job)} for job in jobs], override_num_blocks=len(jobs))
        results = dataset.map_batches(
            _RayWorker,
            fn_constructor_args=(settings, device, dtype, str(out), threads),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=num_gpus,
            num_cpus=num_cpus,
        )
        try:
            for row in results.iter_rows():
                yield pickle.loads(row["result"])
        except ray.exceptions.RayError as error:  # an actor died or could not start (e.g. a node lost)
            detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise ProvgenError(f"the Ray run stopped: {type(error).__name__}: {detail}; jobs that finished are "
                               "recorded, run the same command again to do the rest") from error
    finally:
        if started_here:
            ray.shutdown()
