"""``provgen.batch``: many requests, resumable and idempotent, in one process, a local pool, or on Ray.

Every job runs through the same :class:`~provgen.core.engine.Engine` and provenance layer as
``provgen generate``; the layer registers the generation together with a ``done`` record of its job key
(:mod:`provgen.provenance.registry.jobs`), so whatever stops a run (an error, Ctrl-C, SIGKILL, a lost node),
running the same jobs again does only what is missing, and never registers a job twice:

1. jobs are read and checked (:mod:`provgen.core.jobs`); a bad line fails alone, with its reason;
2. the output folder is locked and what a killed run left there is removed (:mod:`provgen.core.batch_outdir`);
3. keys already done are skipped (their assets are reported), repeated keys in the same input too;
4. the rest run (``workers`` local processes, or Ray actors), results are yielded as they finish; a failure is
   recorded with its reason (``batch_jobs.status = 'failed'``) and does not stop the batch unless
   ``fail_fast``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from provgen.core.config import Settings, load_settings
from provgen.core.errors import JobAlreadyDone, ProvgenError, ValidationError
from provgen.core.jobs import Job, make_jobs, read_jobs
from provgen.core.request import GenerationRequest
from provgen.core.result import GenerationResult

if TYPE_CHECKING:
    from provgen.core.engine import Engine

__all__ = ["JobResult", "BatchSummary", "batch", "run_job", "ENGINES"]

#: where jobs run: this machine (``workers`` processes) or a Ray cluster (``workers`` actors)
ENGINES = ("local", "ray")
#: statuses of a :class:`JobResult`
STATUSES = ("done", "failed", "skipped")


@dataclass(frozen=True)
class JobResult:
    """What happened to one job."""

    line: int
    job_key: str
    #: ``done`` (generated now), ``failed`` (``reason``), ``skipped`` (done before, or a repeat; ``reason``)
    status: str
    reason: str | None = None
    #: the generation (``done`` only)
    result: GenerationResult | None = None
    #: the job's assets: generated now, or earlier (``skipped`` as already done)
    asset_ids: tuple[str, ...] = ()
    #: wall time of the job in its worker
    seconds: float = 0.0
    #: the process that ran it, ``host:pid`` (``None`` when no worker ran it)
    worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"line": self.line, "job_key": self.job_key, "status": self.status,
                                "reason": self.reason, "asset_ids": list(self.asset_ids), "worker": self.worker}
        if self.result is not None:
            data["generation_id"] = self.result.generation_id
            data["images"] = [image.to_dict() for image in self.result.images]
            data["timings_ms"] = {k: round(v * 1000, 2) for k, v in self.result.timings.items()}
        return data


@dataclass
class BatchSummary:
    """Counts of a finished (or interrupted) batch, built from its :class:`JobResult` s."""

    total: int
    results: list[JobResult] = field(default_factory=list)
    #: files a killed earlier run had left in the output folder, removed before this run
    swept: list[Path] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def not_run(self) -> int:
        return self.total - len(self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.count("done"), "failed": self.count("failed"),
                "skipped": self.count("skipped"), "not_run": self.not_run, "interrupted": self.interrupted,
                "swept": [str(p) for p in self.swept],
                "jobs": [r.to_dict() for r in sorted(self.results, key=lambda r: r.line)]}


def run_job(engine: Engine, job: Job) -> JobResult:
    """Run one valid job on ``engine``; a failure is recorded in the registry and returned, never raised
    (except KeyboardInterrupt and the like, which stop the run: the layer has cleaned up by then)."""
    from provgen.provenance.registry import jobs as registry_jobs

    assert job.request is not None
    started, worker = time.perf_counter(), f"{socket.gethostname()}:{os.getpid()}"
    try:
        result = engine.generate(job.request)
    except JobAlreadyDone as error:  # another run committed it between our check and our commit
        return JobResult(job.line, job.job_key, "skipped", str(error), seconds=time.perf_counter() - started,
                         worker=worker)
    except ProvgenError as error:
        reason = str(error)
    except Exception as error:  # a bug in a plugin or in provgen: the job fails, the batch goes on
        reason = f"internal error: {type(error).__name__}: {error}"
    else:
        return JobResult(job.line, job.job_key, "done", None, result,
                         tuple(image.asset_id for image in result.images), time.perf_counter() - started, worker)
    try:
        registry_jobs.record_failure(engine.provenance.registry, job_key=job.job_key,
                                     request_sha256=job.request_sha256, request=job.record(), reason=reason)
    except ProvgenError as error:
        reason += f" (the failure could not be recorded in the registry: {error})"
    return JobResult(job.line, job.job_key, "failed", reason, seconds=time.perf_counter() - started, worker=worker)


def batch(
    requests: str | os.PathLike[str] | Iterable[GenerationRequest | Mapping[str, Any]],
    *,
    output_dir: str | os.PathLike[str] = "out",
    workers: int = 1,
    engine: Literal["local", "ray"] = "local",
    address: str | None = None,
    fail_fast: bool = False,
    settings: Settings | None = None,
    device: str | None = None,
    dtype: str | None = None,
    user: str | None = None,
    summary: BatchSummary | None = None,
) -> Iterator[JobResult]:
    """Run a batch and yield a :class:`JobResult` per job as it finishes (skips and bad lines first).

    :param requests: a JSONL file (see :mod:`provgen.core.jobs`), or requests / line-like mappings.
    :param output_dir: folder for every job's files (locked for the run).
    :param workers: local processes (``engine="local"``) or Ray actors (``engine="ray"``), each with its own
        pipeline, signer and registry connection.
    :param address: Ray cluster address (``engine="ray"``); ``None`` starts or joins a local one.
    :param fail_fast: stop at the first failure (jobs already running finish and are reported).
    :param summary: filled in as results come (counts, swept files), also when the run is interrupted.
    :raises ValidationError: bad arguments, unreadable file, or the output folder is in use.
    """
    settings = settings or load_settings()
    if engine not in ENGINES:
        raise ValidationError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValidationError("workers", f"must be a positive integer, got {workers!r}")
    if engine == "ray":
        from provgen.core.batch_ray import require_ray

        require_ray()
    out = Path(output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValidationError("output_dir", f"{str(out)!r} exists and is not a directory")
    if isinstance(requests, (str, os.PathLike)):
        jobs = read_jobs(Path(requests), output_dir=out, default_model=settings.default_model, user=user)
    else:
        jobs = make_jobs(requests, output_dir=out, default_model=settings.default_model, user=user)
    summary = summary if summary is not None else BatchSummary(total=len(jobs))
    summary.total = len(jobs)
    return _run(jobs, out, settings, summary, workers=workers, engine=engine, address=address,
                fail_fast=fail_fast, device=device, dtype=dtype)


def _run(jobs: list[Job], out: Path, settings: Settings, summary: BatchSummary, *, workers: int, engine: str,
         address: str | None, fail_fast: bool, device: str | None, dtype: str | None) -> Iterator[JobResult]:
    from provgen.core.batch_outdir import OutputLock, sweep
    from provgen.provenance.registry import jobs as registry_jobs
    from provgen.provenance.registry import open_registry

    lock = OutputLock(out)
    registry = open_registry(settings.registry_url, upgrade="blank")
    pending: list[Job] = []
    try:
        lock.exclusive()
        try:
            summary.swept = sweep(out, registry, [job.job_key for job in jobs])
        finally:
            lock.shared()
        for result in _plan(jobs, registry, pending, registry_jobs):
            summary.results.append(result)
            yield result
            if fail_fast and result.status == "failed":
                return
        registry.close()
        if not pending:
            return
        if engine == "ray":
            from provgen.core.batch_ray import run_on_ray

            results = run_on_ray(pending, settings, out, workers=workers, address=address, device=device,
                                 dtype=dtype)
        elif workers == 1:
            results = _run_here(pending, settings, device=device, dtype=dtype)
        else:
            results = _run_in_processes(pending, settings, out, workers=workers, device=device, dtype=dtype)
        try:
            for result in results:
                summary.results.append(result)
                yield result
                if fail_fast and result.status == "failed":
                    return
        finally:
            results.close()  # stops the workers (jobs already running finish or roll back)
    except BaseException:
        summary.interrupted = True
        _note_committed(summary, pending, registry, registry_jobs)
        raise
    finally:
        registry.close()
        lock.release()


def _note_committed(summary: BatchSummary, pending: list[Job], registry: Any, registry_jobs: Any) -> None:
    """After an interrupt (the workers stopped): count as done the jobs that committed but whose result never
    reached this loop (Ctrl-C between a job's commit and its result; jobs a worker finished after it), so the
    summary says what a re-run will skip. The registry is the record; if it cannot be read now, the summary
    stays as it was (a re-run still skips them)."""
    reported = {result.job_key for result in summary.results}
    missing = [job for job in pending if job.job_key not in reported]
    if not missing:
        return
    try:
        states = registry_jobs.states(registry, [job.job_key for job in missing])
    except (ProvgenError, KeyboardInterrupt):
        return
    for job in missing:
        state = states.get(job.job_key)
        if state is not None and state.status == "done":
            summary.results.append(JobResult(job.line, job.job_key, "done", "committed as the run was interrupted",
                                             asset_ids=state.asset_ids))


def _plan(jobs: list[Job], registry: Any, pending: list[Job], registry_jobs: Any) -> Iterator[JobResult]:
    """Results of the jobs that need no worker (done before, repeated, invalid); the rest go to ``pending``."""
    states = registry_jobs.states(registry, [job.job_key for job in jobs])
    first: dict[str, Job] = {}
    for job in jobs:
        earlier = first.setdefault(job.job_key, job)
        if earlier is not job:
            if earlier.request_sha256 == job.request_sha256:
                yield JobResult(job.line, job.job_key, "skipped", f"the same job as line {earlier.line}")
            else:
                yield JobResult(job.line, job.job_key, "failed",
                                f"job_id {job.job_key!r} is already used on line {earlier.line} "
                                "for a different request; give each request its own job_id")
            continue
        state = states.get(job.job_key)
        if state is not None and state.status == "done":
            if (job.request is not None and state.request_sha256 != job.request_sha256
                    and not job.job_key.startswith("sha256:")):  # (a hashed key is the line itself)
                yield JobResult(job.line, job.job_key, "failed",
                                f"job_id {job.job_key!r} was done earlier for a different request "
                                f"(generation {state.generation_id}); give this request a new job_id",
                                asset_ids=state.asset_ids)
            else:
                yield JobResult(job.line, job.job_key, "skipped", "already done", asset_ids=state.asset_ids)
            continue
        if job.error is not None:
            reason = job.error
            try:
                registry_jobs.record_failure(registry, job_key=job.job_key, request_sha256=job.request_sha256,
                                             request=job.record(), reason=reason)
            except ProvgenError as error:
                reason += f" (the failure could not be recorded in the registry: {error})"
            yield JobResult(job.line, job.job_key, "failed", reason)
            continue
        pending.append(job)


def _run_here(jobs: list[Job], settings: Settings, *, device: str | None, dtype: str | None
              ) -> Iterator[JobResult]:
    from provgen.core.engine import Engine

    engine = Engine(settings, device=device, dtype=dtype, progress=False)
    try:
        for job in jobs:
            yield run_job(engine, job)
    finally:
        engine.close()


# -- local worker processes ------------------------------------------------------------------------------

_worker_engine: Engine | None = None


def _worker_init(settings: Settings, device: str | None, dtype: str | None, out: str, threads: int) -> None:
    """In each worker process (spawned: no c2pa signer or database connection is inherited)."""
    import signal

    from provgen.core.batch_outdir import OutputLock
    from provgen.core.engine import Engine

    global _worker_engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it stops the pool
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    lock = OutputLock(Path(out))
    lock.shared()  # held until the process exits: a re-run does not sweep while this one may still write
    _worker_engine = Engine(settings, device=device, dtype=dtype, progress=False)


def _worker_run(job: Job) -> JobResult:
    assert _worker_engine is not None
    return run_job(_worker_engine, job)


def _run_in_processes(jobs: list[Job], settings: Settings, out: Path, *, workers: int, device: str | None,
                      dtype: str | None) -> Iterator[JobResult]:
    """``workers`` spawned processes, torch threads split between them, results as they finish."""
    import multiprocessing
    from concurrent.futures import CancelledError, ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(settings, device, dtype, str(out), threads))
    try:
        futures = {pool.submit(_worker_run, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield future.result()
            except CancelledError:
                continue
            except BrokenProcessPool as error:
                yield JobResult(job.line, job.job_key, "failed", f"the worker process died ({error}); run the "
                                "batch again to retry this job")
    finally:
        # stopped early (Ctrl-C, --fail-fast): cancel what has not started and wait for the running jobs to
        # commit or roll back (the interpreter would wait for them at exit anyway), so that the summary, checked
        # against the registry after this, counts the ones that committed
        pool.shutdown(wait=True, cancel_futures=True)
