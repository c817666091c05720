"""``provgen batch --engine ray``: Ray Data actors (local mode) feed the same engine and provenance layer and
write to one PostgreSQL registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from provgen.cli.main import cli

pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'provgen[ray]'; the dev extra has it)")

N = 40


@pytest.mark.postgres
def test_forty_jobs_on_two_ray_workers_into_postgresql(tiny_sd_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import fresh_postgres_database

    from provgen.provenance.registry import Asset, BatchJob, Generation, open_registry

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(
        json.dumps({"job_id": f"ray-{i:02d}", "prompt": f"shape {i}", "model": str(tiny_sd_dir), "seed": i,
                    "width": 64, "height": 64, "steps": 2}) + "\n"
        for i in range(N)))
    out = tmp_path / "out"
    with fresh_postgres_database() as url:
        monkeypatch.setenv("PROVGEN_REGISTRY_URL", url)
        runner = CliRunner()
        result = runner.invoke(cli, ["batch", str(jobs), "--out", str(out), "--engine", "ray", "--workers", "2",
                                     "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["total"], report["done"], report["failed"], report["skipped"]) == (N, N, 0, 0)
        assert len({job["images"][0]["asset_id"] for job in report["jobs"]}) == N
        assert len({job["worker"] for job in report["jobs"]}) == 2  # both actors took part

        with open_registry(url) as registry, registry.session() as session:
            assert session.scalar(select(func.count()).select_from(Generation)) == N
            assert session.scalar(select(func.count()).select_from(Asset)) == N
            done = session.scalars(select(BatchJob)).all()
            chain = registry.verify_chain()
        assert sorted(j.job_key for j in done) == [f"ray-{i:02d}" for i in range(N)]
        assert {j.status for j in done} == {"done"} and len({j.generation_id for j in done}) == N
        assert chain.ok and chain.problems == []
        files = sorted(str(p) for p in out.glob("*.png"))
        assert len(files) == N
        verified = runner.invoke(cli, ["verify", *files, "--json", "--no-record"], catch_exceptions=False)
        assert verified.exit_code == 0, verified.stderr
        assert {r["verdict"] for r in json.loads(verified.stdout)} == {"verified"}

        # a re-run on Ray does nothing twice
        again = runner.invoke(cli, ["batch", str(jobs), "--out", str(out), "--engine", "ray", "--workers", "2",
                                    "--json"], catch_exceptions=False)
        assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == N
