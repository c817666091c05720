"""Several OS processes writing to one registry at once, on SQLite and PostgreSQL.

Each of 4 processes (``spawn``: a fresh interpreter, its own engine and connections) writes 200 records, one
transaction each: a generation, its asset and, for every fourth record, a lineage edge to an earlier asset
(its own, or the newest one any process has committed). They start behind a barrier so the writes really
overlap. Afterwards the registry must hold exactly what each process reported writing, once, and the audit
log must be one unbroken chain over all of it (appends are serialised: SQLite's write lock taken at BEGIN
IMMEDIATE, a PostgreSQL advisory lock).
"""

from __future__ import annotations

import multiprocessing
import secrets
import time
from typing import Any

from sqlalchemy import func, select

from provgen.provenance.registry import Asset, AuditEntry, Generation, LineageEdge, open_registry
from tests.factories import fake_generation

PROCESSES = 4
RECORDS = 200
#: every EDGE_EVERY-th record of a process also gets a lineage edge
EDGE_EVERY = 4
EDGES = PROCESSES * (RECORDS // EDGE_EVERY)


def _write_records(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Runs in a child process: write RECORDS records to ``url`` and report what was written."""
    try:
        registry = open_registry(url, upgrade=False)  # the parent migrated it; a child must not need to
        try:
            barrier.wait(timeout=60)
            started = time.time()
            assets, edges = _write(registry, worker)
            results.put(
                {
                    "worker": worker,
                    "assets": assets,
                    "edges": edges,
                    "started": started,
                    "finished": time.time(),
                    "error": None,
                }
            )
        finally:
            registry.close()
    except BaseException as exc:  # noqa: BLE001 - report every failure to the parent, which asserts
        barrier.abort()  # do not leave the others waiting for a process that is gone
        results.put({"worker": worker, "error": f"{type(exc).__name__}: {exc}"})


def _write(registry: Any, worker: int) -> tuple[list[str], list[tuple[str, str]]]:
    assets: list[str] = []
    edges: list[tuple[str, str]] = []
    for index in range(RECORDS):
        asset_id, watermark_id = registry.new_ids()
        seed = secrets.randbelow(2**63)
        with registry.transaction() as session:
            generation = fake_generation(
                requester=f"worker-{worker}@example.org",
                prompt=f"a lighthouse at dusk, worker {worker}, record {index}",
                negative_prompt="blurry" if index % 2 else None,
                seed=seed,
                recipe={"prompt": "a lighthouse at dusk", "steps": 25, "cfg": 7.5, "worker": worker, "i": index},
                asset_fields=[
                    {
                        "id": asset_id,
                        "watermark_id": watermark_id,
                        "seed": seed,
                        "size_bytes": 300_000 + index,
                        "path": f"/out/worker-{worker}/{index:04d}.png",
                        "manifest_store": b"c2pa" + secrets.token_bytes(200 + secrets.randbelow(300)),
                    }
                ],
            )
            parent = None
            if index % EDGE_EVERY == EDGE_EVERY - 1:
                if (index // EDGE_EVERY) % 2:
                    parent = assets[-1]  # this process's previous asset
                else:  # the newest asset any process has committed so far (queried before adding ours)
                    parent = session.scalar(select(Asset.id).order_by(Asset.created_at.desc()).limit(1))
            session.add(generation)
            if parent is not None:
                session.add(
                    LineageEdge(
                        parent_id=parent,
                        child_id=asset_id,
                        generation_id=generation.id,
                        relation="parentOf",
                        role="init_image",
                    )
                )
                edges.append((parent, asset_id))
        assets.append(asset_id)
    return assets, edges


def test_concurrent_processes_write_one_consistent_registry(db_url):
    open_registry(db_url).close()  # migrate once, up front
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_write_records, args=(db_url, worker, barrier, results), daemon=True)
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [r["error"] for r in reports if r["error"]]
    assert not errors, errors
    assert all(process.exitcode == 0 for process in processes)
    reports.sort(key=lambda r: r["worker"])
    assert [r["worker"] for r in reports] == list(range(PROCESSES))
    # the barrier worked: every process was still writing when the last one started
    assert max(r["started"] for r in reports) < min(r["finished"] for r in reports)

    written = [asset_id for r in reports for asset_id in r["assets"]]
    edges_written = {edge for r in reports for edge in r["edges"]}
    assert len(written) == len(set(written)) == PROCESSES * RECORDS
    assert len(edges_written) == EDGES

    with open_registry(db_url, upgrade=False) as registry, registry.session() as session:

        def scalar(statement: Any) -> int:
            return int(session.scalar(statement))

        assert scalar(select(func.count()).select_from(Generation)) == PROCESSES * RECORDS
        assert scalar(select(func.count()).select_from(Asset)) == PROCESSES * RECORDS
        for column in (Asset.sha256, Asset.watermark_id, Asset.manifest_label, Asset.generation_id):
            assert scalar(select(func.count(func.distinct(column)))) == PROCESSES * RECORDS, column
        assert set(session.scalars(select(Asset.id))) == set(written)
        for worker in range(PROCESSES):  # each process's records are all there, under its own generations
            mine = set(
                session.scalars(
                    select(Asset.id).join(Generation).where(Generation.requester == f"worker-{worker}@example.org")
                )
            )
            assert mine == set(reports[worker]["assets"])
        assert set(session.execute(select(LineageEdge.parent_id, LineageEdge.child_id))) == edges_written

        seqs = list(session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)))
        entries = PROCESSES * RECORDS * 2 + EDGES
        assert seqs == list(range(1, entries + 1))  # contiguous: no gap, no duplicate, nothing interleaved twice
        logged = session.execute(select(AuditEntry.record_type, AuditEntry.record_id, AuditEntry.action)).all()
        assert len(set(logged)) == entries and {action for _, _, action in logged} == {"insert"}
        assert {record_id for record_type, record_id, _ in logged if record_type == "asset"} == set(written)
        # the writes interleaved (processes one after another would switch writer only PROCESSES - 1 times)
        writers = list(
            session.scalars(
                select(Generation.requester)
                .join(AuditEntry, AuditEntry.record_id == Generation.id)
                .where(AuditEntry.record_type == "generation")
                .order_by(AuditEntry.seq)
            )
        )
        switches = sum(a != b for a, b in zip(writers, writers[1:], strict=False))
        print(f"writer switches in the audit log: {switches}")
        assert switches > PROCESSES - 1

        report = registry.verify_chain()
        assert report.ok, [str(problem) for problem in report.problems]
        assert report.entries == report.records == entries
        assert report.head_seq == entries
