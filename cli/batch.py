"""``provgen batch``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provgen.cli._common import emit_json, json_option, settings_from, signing_options
from provgen.core.batch import ENGINES, BatchSummary


@click.command()
@click.argument("jobs", metavar="JOBS.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", "output_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Folder for every job's signed images (one batch at a time writes to it).")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel workers, each with its own pipeline: local processes, or Ray actors with --engine ray.")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="Run on this machine, or on a Ray cluster (needs: pip install 'provgen[ray]').")
@click.option("--address", default=None,
              help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local Ray.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed job (running jobs finish).")
@click.option("--user", default=None, help="Requester recorded for lines without a `user` (default: PROVGEN_USER).")
@click.option("--device", default=None, help="torch device for every worker (default: best available).")
@click.option("--dtype", default=None, help="float32, float16 or bfloat16 (default: float16 on CUDA).")
@signing_options
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary (failures are still printed).")
def batch(jobs: Path, output_dir: Path, workers: int, engine: str, address: str | None, fail_fast: bool,
          user: str | None, device: str | None, dtype: str | None, cert: Path | None, key: Path | None,
          as_json: bool, quiet: bool) -> None:
    """Generate every request of JOBS.jsonl (one JSON object per line), resumably.

    \b
    A line has the fields of `generate` (prompt, model, seed, steps, guidance, width, height, scheduler,
    num_images, format, quality, post, init_image, mask, strength, lora, controlnet, ip_adapter, user, ...)
    and an optional job_id, e.g.
      {"job_id": "hero-1", "prompt": "a red circle on a blue background", "seed": 7, "steps": 20}
    Each job's key is its job_id, or a hash of the line. Running the same file again (after a crash,
    Ctrl-C or a failure) does only what is missing: done jobs are skipped, never generated twice. A job
    that fails is recorded with its reason and the batch goes on (unless --fail-fast).

    Exit status: 0 when every job is done or skipped, 1 when one failed, 2 for usage errors, 130 when
    interrupted.
    """
    from provgen.core.batch import batch as run_batch

    settings = settings_from(cert_path=cert, key_path=key)
    summary = BatchSummary(total=0)
    results = run_batch(jobs, output_dir=output_dir, workers=workers, engine=engine,  # type: ignore[arg-type]
                        address=address, fail_fast=fail_fast, settings=settings, device=device, dtype=dtype,
                        user=user, summary=summary)
    bar = None
    if not (as_json or quiet):
        from tqdm import tqdm

        bar = tqdm(total=summary.total, unit="job", desc="batch", file=sys.stderr, dynamic_ncols=True,
                   disable=None)  # None: off when stderr is not a terminal
        bar.set_postfix_str(_counts(summary), refresh=False)
    try:
        for result in results:
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(_counts(summary), refresh=False)
                if result.status == "failed" and not bar.disable:  # (a disabled bar: the summary lists them)
                    bar.write(f"line {result.line} failed: {result.reason}", file=sys.stderr)
            elif result.status == "failed" and quiet:
                click.echo(f"line {result.line} failed: {result.reason}", err=True)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        _report(summary, as_json, quiet)
        click.echo(f"interrupted: {summary.not_run} job(s) not run; run the same command again to finish them "
                   "(done jobs are skipped)", err=True)
        sys.exit(130)
    if bar is not None:
        bar.close()
    _report(summary, as_json, quiet)
    if summary.count("failed") or summary.not_run:
        sys.exit(1)


def _counts(summary: BatchSummary) -> str:
    return f"done={summary.count('done')} failed={summary.count('failed')} skipped={summary.count('skipped')}"


def _report(summary: BatchSummary, as_json: bool, quiet: bool) -> None:
    if as_json:
        emit_json(summary.to_dict())
        return
    if quiet:
        return
    if summary.swept:
        click.echo(f"removed {len(summary.swept)} unfinished file(s) left by an interrupted run", err=True)
    failed = [r for r in summary.results if r.status == "failed"]
    line = (f"{summary.total} job(s): {summary.count('done')} done, {len(failed)} failed, "
            f"{summary.count('skipped')} skipped (already done)")
    if summary.not_run:
        line += f", {summary.not_run} not run"
    click.echo(line)
    for result in sorted(failed, key=lambda r: r.line):
        click.echo(f"  failed  line {result.line} [{result.job_key}]: {result.reason}")


COMMANDS = [batch]
