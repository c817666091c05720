"""``provgen batch`` / ``provgen.batch``: job keys, resumability, failures recorded, crash recovery (SIGKILL)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

import provgen
from provgen.cli.main import cli
from provgen.core.errors import JobAlreadyDone, ValidationError
from provgen.core.request import GenerationRequest

TINY = {"width": 64, "height": 64, "steps": 2}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write_jobs(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def registry_counts(url: str) -> dict[str, int]:
    from provgen.provenance.registry import Asset, BatchJob, Generation, open_registry

    with open_registry(url) as registry, registry.session() as session:
        return {
            "generations": session.scalar(select(func.count()).select_from(Generation)),
            "assets": session.scalar(select(func.count()).select_from(Asset).where(Asset.kind == "generated")),
            "done": session.scalar(select(func.count()).select_from(BatchJob).where(BatchJob.status == "done")),
            "failed": session.scalar(select(func.count()).select_from(BatchJob).where(BatchJob.status == "failed")),
        }


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'registry.db'}"


def test_mixed_file_runs_what_it_can_and_a_rerun_does_nothing_twice(tiny_sd_dir: Path, tmp_path: Path,
                                                                   provgen_home: Path) -> None:
    model = str(tiny_sd_dir)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"job_id": "hero-1", "prompt": "a red circle", "model": model, "seed": 1, **TINY},
        {"prompt": "a blue square", "model": model, "seed": 2, **TINY, "num_images": 2},
        "# a comment, then a blank line",
        "",
        {"prompt": "bad size", "model": model, **TINY, "width": 65},
        "{not json",
        {"prompt": "typo", "model": model, **TINY, "colour": "red"},
        {"prompt": "late", "model": model, "seed": 3, **TINY, "scheduler": "no-such-scheduler"},
        {"job_id": "hero-1", "prompt": "a red circle", "model": model, "seed": 1, **TINY},  # a repeat
        {"job_id": "hero-1", "prompt": "something else", "model": model, **TINY},  # the id reused: refused
    ])
    out = tmp_path / "out"
    code, stdout, _ = run("batch", str(jobs), "--out", str(out), "--json")
    assert code == 1  # some failed
    report = json.loads(stdout)
    by_line = {job["line"]: job for job in report["jobs"]}
    assert (report["total"], report["done"], report["failed"], report["skipped"]) == (8, 2, 5, 1)
    assert by_line[1]["status"] == "done" and by_line[1]["job_key"] == "hero-1"
    assert by_line[2]["status"] == "done" and by_line[2]["job_key"].startswith("sha256:")
    assert len(by_line[2]["images"]) == 2 and len(by_line[2]["asset_ids"]) == 2
    assert "`width`" in by_line[5]["reason"] and "divisible by 8" in by_line[5]["reason"]
    assert "not valid JSON" in by_line[6]["reason"]
    assert "`colour`" in by_line[7]["reason"] and "not a request field" in by_line[7]["reason"]
    assert "no-such-scheduler" in by_line[8]["reason"]  # failed inside the engine; the batch went on
    assert by_line[9]["status"] == "skipped" and "line 1" in by_line[9]["reason"]
    assert by_line[10]["status"] == "failed" and "already used on line 1" in by_line[10]["reason"]
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == sorted(f"{a}.png" for job in (by_line[1], by_line[2]) for a in job["asset_ids"])
    counts = registry_counts(sqlite_url(provgen_home))
    assert counts == {"generations": 2, "assets": 3, "done": 2, "failed": 4}  # the repeats are not recorded

    # again: nothing is generated twice; done jobs report their assets; failures are attempted again
    code, stdout, _ = run("batch", str(jobs), "--out", str(out), "--json")
    again = {job["line"]: job for job in json.loads(stdout)["jobs"]}
    assert code == 1
    assert again[1]["status"] == again[2]["status"] == "skipped" and again[1]["reason"] == "already done"
    assert again[2]["asset_ids"] == by_line[2]["asset_ids"]
    assert registry_counts(sqlite_url(provgen_home))["generations"] == 2
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == files

    # every output verifies, and the audit chain holds the job records
    code, stdout, _ = run("verify", *[str(out / f) for f in files], "--json", "--no-record")
    assert code == 0 and {r["verdict"] for r in json.loads(stdout)} == {"verified"}
    code, stdout, _ = run("registry", "verify", "--json")
    assert code == 0 and json.loads(stdout)["ok"] is True


def test_failures_are_recorded_with_reason_and_attempts(tiny_sd_dir: Path, tmp_path: Path,
                                                        provgen_home: Path) -> None:
    from provgen.provenance.registry import BatchJob, open_registry

    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"job_id": "j", "prompt": "x", "model": str(tiny_sd_dir),
                                                 **TINY, "scheduler": "nope"}])
    for _ in range(2):
        code, _, _ = run("batch", str(jobs), "--out", str(tmp_path / "out"), "--quiet")
        assert code == 1
    with open_registry(sqlite_url(provgen_home)) as registry, registry.session() as session:
        row = session.scalars(select(BatchJob)).one()
    assert (row.job_key, row.status, row.attempts, row.generation_id) == ("j", "failed", 2, None)
    assert "nope" in row.reason and row.request["scheduler"] == "nope"
    # fixed line, same job_id: it runs, the row turns done and keeps the count
    write_jobs(jobs, [{"job_id": "j", "prompt": "x", "model": str(tiny_sd_dir), **TINY}])
    code, _, _ = run("batch", str(jobs), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0
    with open_registry(sqlite_url(provgen_home)) as registry, registry.session() as session:
        row = session.scalars(select(BatchJob)).one()
    assert (row.status, row.attempts) == ("done", 3) and row.generation_id is not None


def test_fail_fast_stops_at_the_first_failure(tiny_sd_dir: Path, tmp_path: Path) -> None:
    model = str(tiny_sd_dir)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"prompt": "one", "model": model, "seed": 1, **TINY},
        {"prompt": "two", "model": model, **TINY, "scheduler": "nope"},
        {"prompt": "three", "model": model, "seed": 3, **TINY},
    ])
    code, stdout, _ = run("batch", str(jobs), "--out", str(tmp_path / "out"), "--json", "--fail-fast")
    report = json.loads(stdout)
    assert code == 1
    assert [(j["line"], j["status"]) for j in report["jobs"]] == [(1, "done"), (2, "failed")]
    assert report["not_run"] == 1


def test_usage_errors(tmp_path: Path) -> None:
    code, _, err = run("batch", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "file").write_text("x")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"prompt": "x"}])
    code, _, err = run("batch", str(jobs), "--out", str(tmp_path / "file"))
    assert code == 2 and "is a file" in err
    with pytest.raises(ValidationError, match="not a directory"):
        provgen.batch(jobs, output_dir=tmp_path / "file")
    code, _, err = run("batch", str(jobs), "--workers", "0")
    assert code == 2 and "--workers" in err
    with pytest.raises(ValidationError, match="engine"):
        provgen.batch([{"prompt": "x"}], engine="spark")  # type: ignore[arg-type]


def test_ray_engine_without_ray_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray gives: ImportError
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"prompt": "x"}])
    code, _, err = run("batch", str(jobs), "--engine", "ray", "--out", str(tmp_path / "out"))
    assert code == 2 and "pip install 'provgen[ray]'" in err
    assert not (tmp_path / "out").exists()


def test_python_api_yields_results_and_job_keys_are_idempotent(tiny_sd_dir: Path, tmp_path: Path,
                                                               provgen_home: Path) -> None:
    requests = [GenerationRequest(prompt=f"p{i}", model=str(tiny_sd_dir), width=64, height=64,
                                  num_inference_steps=2, seed=i) for i in range(3)]
    results = list(provgen.batch(requests, output_dir=tmp_path / "out"))
    assert sorted(r.line for r in results) == [1, 2, 3] and {r.status for r in results} == {"done"}
    assert all(r.result is not None and r.result.recipe["job_key"] == r.job_key for r in results)
    again = list(provgen.batch(requests, output_dir=tmp_path / "out"))
    assert {r.status for r in again} == {"skipped"}
    assert {r.asset_ids for r in again} == {r.asset_ids for r in results}

    # the layer itself refuses a second generation under a done key, and writes nothing
    engine = provgen.Engine(progress=False)
    try:
        before = sorted((tmp_path / "out").iterdir())
        with pytest.raises(JobAlreadyDone):
            engine.generate(requests[0].replace(output_dir=tmp_path / "out", job_key=results[0].job_key))
        assert sorted((tmp_path / "out").iterdir()) == before
    finally:
        engine.close()
    assert registry_counts(sqlite_url(provgen_home))["generations"] == 3


@pytest.mark.postgres
def test_concurrent_runs_of_one_job_register_it_once(tiny_sd_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import fresh_postgres_database

    with fresh_postgres_database() as url:
        monkeypatch.setenv("PROVGEN_REGISTRY_URL", url)
        request = GenerationRequest(prompt="race", model=str(tiny_sd_dir), width=64, height=64,
                                    num_inference_steps=2, seed=5, output_dir=tmp_path / "out", job_key="race-1")
        engines = [provgen.Engine(progress=False) for _ in range(3)]
        for engine in engines:  # one at a time: diffusers' loading is not thread-safe
            engine.load(str(tiny_sd_dir))
        outcomes: list[object] = []
        barrier = threading.Barrier(len(engines))

        def attempt(engine: provgen.Engine) -> None:
            barrier.wait()
            try:
                outcomes.append(engine.generate(request))
            except JobAlreadyDone as error:
                outcomes.append(error)

        threads = [threading.Thread(target=attempt, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.close()
        assert sum(not isinstance(o, JobAlreadyDone) for o in outcomes) == 1, outcomes
        counts = registry_counts(url)
        assert (counts["generations"], counts["done"]) == (1, 1)
        assert len([p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]) == 1


def test_sweep_removes_only_what_a_killed_run_of_this_batch_left(tiny_sd_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A file renamed into place whose record never committed (the window a SIGKILL can hit) is removed on
    the next run, but only when its own manifest names a job of this batch; .part temporaries always are."""
    model = str(tiny_sd_dir)
    line = {"job_id": "orphan", "prompt": "o", "model": model, "seed": 9, **TINY}
    other = {"job_id": "someone-else", "prompt": "s", "model": model, "seed": 8, **TINY}
    # make both files under another home (another registry): here they are files without records
    monkeypatch.setenv("PROVGEN_HOME", str(tmp_path / "elsewhere"))
    produced = [r for r in provgen.batch([line, other], output_dir=tmp_path / "elsewhere-out")]
    monkeypatch.setenv("PROVGEN_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    out.mkdir()
    for result in produced:
        shutil.copy(result.result.images[0].path, out)
    (out / f".{'a' * 32}.x1y2.part").write_bytes(b"half a file")
    (out / "notes.txt").write_text("not ours")
    orphan, foreign = (out / Path(r.result.images[0].path).name for r in produced)

    summary = provgen.BatchSummary(total=0)
    results = list(provgen.batch([line], output_dir=out, summary=summary))
    assert sorted(p.name for p in summary.swept) == sorted([orphan.name, f".{'a' * 32}.x1y2.part"])
    assert not orphan.exists() and foreign.exists() and (out / "notes.txt").exists()
    assert [r.status for r in results] == ["done"]  # and the job itself ran again, here


def test_a_second_batch_into_the_same_folder_is_refused_while_one_runs(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from provgen.core import batch_outdir
    from provgen.core.batch_outdir import OutputLock

    monkeypatch.setattr(batch_outdir, "LOCK_WAIT_S", 1.0)
    holder = OutputLock(tmp_path / "out")
    holder.shared()  # what a running batch (or a worker of a killed one) holds
    try:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [{"prompt": "x"}])
        start = time.monotonic()
        with pytest.raises(ValidationError, match="another provgen batch"):
            list(provgen.batch(jobs, output_dir=tmp_path / "out", settings=None))
        assert time.monotonic() - start >= 1  # it waited for the workers of a killed run first
    finally:
        holder.release()


def batch_command(n: int, tiny_sd_dir: Path, tmp_path: Path, home: Path,
                  *options: str) -> tuple[list[str], dict[str, str], Path]:
    """``provgen batch`` of n 128² jobs as a separate process (command, environment, output folder): the
    crash tests signal it from outside."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"prompt": f"job {i}", "model": str(tiny_sd_dir), "seed": i, **TINY, "width": 128, "height": 128}
        for i in range(n)
    ])
    out = tmp_path / "out"
    env = {**os.environ, "PROVGEN_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return [sys.executable, "-m", "provgen.cli.main", "batch", str(jobs), "--out", str(out), *options], env, out


def test_sigkill_mid_batch_then_rerun_does_every_job_exactly_once(tiny_sd_dir: Path, tmp_path: Path,
                                                                   provgen_home: Path) -> None:
    n = 12
    command, env, out = batch_command(n, tiny_sd_dir, tmp_path, provgen_home, "--workers", "2", "--quiet")
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len([p for p in out.glob("*.png")]) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, mid-job
    process.wait()
    killed_at = registry_counts(sqlite_url(provgen_home))
    assert 0 < killed_at["done"] < n

    rerun = subprocess.run(command[:-1] + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["done"] + report["skipped"] == n and report["failed"] == 0
    assert report["skipped"] == killed_at["done"]  # what committed before the kill is exactly what is skipped

    from provgen.provenance.registry import Asset, BatchJob, open_registry

    with open_registry(sqlite_url(provgen_home)) as registry, registry.session() as session:
        jobs_done = session.scalars(select(BatchJob)).all()
        assets = session.scalars(select(Asset).where(Asset.kind == "generated")).all()
        chain = registry.verify_chain()
    assert len(jobs_done) == n and {j.status for j in jobs_done} == {"done"}
    assert len({j.generation_id for j in jobs_done}) == n
    assert len(assets) == n and {a.generation_id for a in assets} == {j.generation_id for j in jobs_done}
    on_disk = {p.name for p in out.iterdir() if p.name != ".provgen-batch.lock"}
    assert on_disk == {Path(a.path).name for a in assets}  # no orphan file, no .part, no record without file
    assert chain.ok, chain.problems


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path,
                                                   workers: str) -> None:
    n = 8
    command, env, out = batch_command(n, tiny_sd_dir, tmp_path, provgen_home, "--json", "--workers", workers)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and len(list(out.glob("*.png"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr and "Traceback" not in stderr
    partial = json.loads(stdout)
    assert partial["interrupted"] is True and partial["done"] + partial["not_run"] == n and partial["not_run"] > 0
    assert not list(out.glob(".*.part"))  # the job that was interrupted cleaned up after itself
    # what the summary calls done is what committed (also a job that committed as Ctrl-C arrived)
    assert registry_counts(sqlite_url(provgen_home))["done"] == partial["done"]

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(rerun.stdout)
    assert rerun.returncode == 0 and report["skipped"] == partial["done"] and report["done"] == n - partial["done"]
    counts = registry_counts(sqlite_url(provgen_home))
    assert (counts["generations"], counts["done"]) == (n, n)
    assert len(list(out.glob("*.png"))) == n


def test_a_line_takes_the_conditioning_shorthands_of_generate(tmp_path: Path) -> None:
    from provgen.core.jobs import job_from_fields
    from provgen.core.request import conditioning_options

    line = {"prompt": "p", "model": "m", "lora": "style.safetensors:0.7", "controlnet": ["cn=edges.png"],
            "control_guidance_end": 0.8, "ip_adapter": "ip=ref.png"}
    job = job_from_fields(1, line, output_dir=tmp_path)
    assert job.error is None and job.request is not None
    assert dict(job.request.plugin_options) == {
        "lora": ["style.safetensors:0.7"],
        "controlnet": {"units": ["cn=edges.png"], "guidance_start": None, "guidance_end": 0.8},
        "ip_adapter": ["ip=ref.png"],
    }
    # what `provgen generate --lora ... --controlnet ... --control-guidance-end 0.8 --ip-adapter ...` builds
    assert dict(job.request.plugin_options) == conditioning_options(
        lora=("style.safetensors:0.7",), controlnet=("cn=edges.png",), control_guidance_end=0.8,
        ip_adapter=("ip=ref.png",))
    assert job_from_fields(2, {"prompt": "p", "model": "m"}, output_dir=tmp_path).request.plugin_options == {}
