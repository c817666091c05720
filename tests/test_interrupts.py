"""Ctrl-C at the worst moment, a generation's commit: the files stay with their committed records, and a batch
counts the job as done (what a re-run will skip). Real SIGINTs, sent from a SQLAlchemy ``after_commit`` event
so they arrive between the database's commit and the code after it."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

import provgen
from provgen.core import Engine
from provgen.provenance._interrupts import interrupts_held

KW = dict(width=64, height=64, num_inference_steps=2)


def count(home: Path, sql: str) -> int:
    with sqlite3.connect(home / "registry.db") as connection:
        return connection.execute(sql).fetchone()[0]


@contextmanager
def sigint_after_generation_commit(nth: int) -> Iterator[list[int]]:
    """Send this process SIGINT right after the ``nth`` commit of a transaction that inserted a generation."""
    from provgen.provenance.registry import Generation

    commits: list[int] = []

    def after_flush(session: Session, _context: object) -> None:
        if any(isinstance(obj, Generation) for obj in session.new):
            session.info["generation"] = True

    def after_commit(session: Session) -> None:
        if session.info.pop("generation", False):
            commits.append(1)
            if len(commits) == nth:
                os.kill(os.getpid(), signal.SIGINT)

    event.listen(Session, "after_flush", after_flush)
    event.listen(Session, "after_commit", after_commit)
    try:
        yield commits
    finally:
        event.remove(Session, "after_flush", after_flush)
        event.remove(Session, "after_commit", after_commit)


def test_a_held_interrupt_is_raised_when_the_span_ends_and_an_unheld_one_at_once() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held() as guard:
            guard.hold()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler has run by now (it notes the signal)
            done.append("after the signal")
    assert done == ["after the signal"] and guard.received

    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            done.append("not reached")
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_ctrl_c_just_after_the_commit_keeps_the_files_of_the_committed_generation(
        tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    engine = Engine(progress=False)
    with sigint_after_generation_commit(1) as commits, pytest.raises(KeyboardInterrupt):
        engine.generate(prompt="a cat", model=str(tiny_sd_dir), output_dir=tmp_path / "out", seed=1, **KW)
    engine.close()
    assert commits == [1]
    files = sorted((tmp_path / "out").iterdir())
    assert [f.suffix for f in files] == [".png"]  # the image, no .part
    assert count(provgen_home, "SELECT count(*) FROM generations") == 1
    with sqlite3.connect(provgen_home / "registry.db") as connection:
        (path, sha256), = connection.execute("SELECT path, sha256 FROM assets WHERE kind = 'generated'")
    assert Path(path) == files[0] and hashlib.sha256(files[0].read_bytes()).hexdigest() == sha256


def test_a_batch_interrupted_just_after_a_commit_counts_that_job_done(tiny_sd_dir: Path, tmp_path: Path,
                                                                     provgen_home: Path) -> None:
    requests = [{"job_id": f"job-{i}", "prompt": "a cat", "model": str(tiny_sd_dir), "seed": i, **KW}
                for i in range(4)]
    summary = provgen.BatchSummary(total=0)
    seen: list[str] = []
    with sigint_after_generation_commit(2), pytest.raises(KeyboardInterrupt):
        for result in provgen.batch(requests, output_dir=tmp_path / "out", summary=summary):
            seen.append(result.status)
    assert seen == ["done"]  # the second job's result never reached the loop
    assert summary.interrupted and summary.count("done") == 2 and summary.not_run == 2
    late = [r for r in summary.results if r.reason == "committed as the run was interrupted"]
    assert [r.job_key for r in late] == ["job-1"] and len(late[0].asset_ids) == 1
    assert count(provgen_home, "SELECT count(*) FROM batch_jobs WHERE status = 'done'") == 2
    assert len(list((tmp_path / "out").glob("*.png"))) == 2 and not list((tmp_path / "out").glob(".*.part"))

    again = list(provgen.batch(requests, output_dir=tmp_path / "out"))
    assert sorted(r.status for r in again) == ["done", "done", "skipped", "skipped"]
