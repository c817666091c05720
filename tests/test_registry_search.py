"""``provgen registry search`` and provgen.provenance.registry.search, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from provgen.cli.main import cli
from provgen.core.errors import ValidationError
from provgen.provenance.registry import Asset, Registry, open_registry
from provgen.provenance.registry.search import SearchFilters, parse_when, search_assets
from tests.test_registry import make_generation

MODEL_HASH = "abcdef12" + "0" * 56


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    with open_registry(db_url) as reg:
        yield reg


@pytest.fixture
def data(registry: Registry) -> dict[str, str]:
    """Three generations (four images), one external input, verifications; explicit creation times."""
    g1 = make_generation(
        registry,
        2,
        prompt="A Lighthouse at dusk",
        model_id="tiny/sd",
        requester="alice",
        created_at=at("2026-01-10"),
        plugins=[
            {"name": "provgen-shapes", "version": "1.0"},
            {"name": "provgen.plugins.diffusers_backend", "version": "0.1.0"},
        ],
    )
    g2 = make_generation(
        registry,
        1,
        prompt="100% pure_water",
        model_id="other/model",
        model_hash=MODEL_HASH,
        requester="bob",
        created_at=at("2026-02-15T08:00:00"),
        # neither the name "provgen-shapes" nor a substring of it: only an exact name may match
        plugins=[{"name": "provgen-shapes-extra", "version": "provgen-shapes"}],
    )
    g3 = make_generation(
        registry,
        1,
        prompt="Éclair au café",
        model_id="tiny/sd",
        requester="alice",
        created_at=at("2026-03-01T12:00:00"),
        plugins=[],
    )
    for generation in (g1, g2, g3):
        for asset in generation.assets:
            asset.created_at = generation.created_at
    g1.assets[1].created_at = at("2026-01-10T00:00:01")
    with registry.transaction() as session:
        session.add_all([g1, g2, g3])
        external = Asset(
            kind="external",
            sha256="e" * 64,
            format="png",
            size_bytes=10,
            path="/in/sketch.png",
            created_at=at("2026-02-20"),
        )
        session.add(external)
    ids = {
        "g1a0": g1.assets[0].id,
        "g1a1": g1.assets[1].id,
        "g2": g2.assets[0].id,
        "g3": g3.assets[0].id,
        "ext": external.id,
    }
    for asset, verdicts in (
        ("g1a0", ["verified", "tampered"]),
        ("g1a1", ["tampered", "verified"]),
        ("g2", ["recovered"]),
    ):
        for verdict in verdicts:
            registry.record_verification(
                {"path": "/tmp/x.png", "verdict": verdict, "asset_id": ids[asset]}, requester="auditor"
            )
    return ids


def found(registry: Registry, data: dict[str, str], **filters) -> list[str]:
    names = {asset_id: name for name, asset_id in data.items()}
    return [names[hit.id] for hit in search_assets(registry, SearchFilters(**filters))]


def test_each_filter_alone_and_combined(registry, data):
    everything = ["g3", "ext", "g2", "g1a1", "g1a0"]  # newest first
    assert found(registry, data) == everything
    assert found(registry, data, limit=2) == everything[:2]
    # prompt: case-insensitive substring; % and _ are literal characters, not wildcards
    assert found(registry, data, prompt="LIGHTHOUSE") == ["g1a1", "g1a0"]
    assert found(registry, data, prompt="100%") == ["g2"]
    assert found(registry, data, prompt="e_w") == ["g2"]
    assert found(registry, data, prompt="%") == ["g2"]
    assert found(registry, data, prompt="t_d") == []  # would match "at dusk" if _ were a wildcard
    if registry.engine.dialect.name == "sqlite" or _pg_folds_unicode(registry):
        assert found(registry, data, prompt="ÉCLAIR AU CAFÉ") == ["g3"]
    # model: exact id, or a prefix of the weights hash (6+ hex characters)
    assert found(registry, data, model="tiny/sd") == ["g3", "g1a1", "g1a0"]
    assert found(registry, data, model="tiny") == []
    assert found(registry, data, model="ABCDEF12") == ["g2"]
    assert found(registry, data, model="abcdef1200") == ["g2"]
    assert found(registry, data, model="abcde") == []  # too short to be a hash prefix
    # plugin: exact name of one element of the JSON list
    assert found(registry, data, plugin="provgen-shapes") == ["g1a1", "g1a0"]
    assert found(registry, data, plugin="provgen-shapes-extra") == ["g2"]
    assert found(registry, data, plugin="provgen") == []
    assert found(registry, data, plugin="1.0") == []
    assert found(registry, data, user="alice") == ["g3", "g1a1", "g1a0"]
    assert found(registry, data, user="ALICE") == []
    # time: since inclusive, before exclusive (the CLI makes --until inclusive)
    assert found(registry, data, since=at("2026-02-15T08:00:00")) == ["g3", "ext", "g2"]
    assert found(registry, data, before=parse_when("2026-02-15", upper=True)) == ["g2", "g1a1", "g1a0"]
    assert found(registry, data, before=parse_when("2026-02-15T08:00:00", upper=True)) == ["g2", "g1a1", "g1a0"]
    assert found(registry, data, before=parse_when("2026-02-15T07:59:59", upper=True)) == ["g1a1", "g1a0"]
    assert found(registry, data, before=parse_when("2026-02-15T09:00:00+02:00", upper=True)) == ["g1a1", "g1a0"]
    # verdict: of the most recent verification only
    assert found(registry, data, verdict="tampered") == ["g1a0"]
    assert found(registry, data, verdict="verified") == ["g1a1"]
    assert found(registry, data, verdict="recovered") == ["g2"]
    assert found(registry, data, verdict="unknown") == []
    assert found(registry, data, kind="external") == ["ext"]
    assert found(registry, data, kind="generated") == ["g3", "g2", "g1a1", "g1a0"]
    # combined: every filter must match
    assert found(registry, data, user="alice", prompt="lighthouse", verdict="verified") == ["g1a1"]
    assert found(registry, data, model="tiny/sd", since=at("2026-02-01")) == ["g3"]
    assert found(registry, data, kind="external", user="alice") == []
    assert found(
        registry, data, plugin="provgen-shapes", since=at("2026-01-10T00:00:01"), before=at("2026-01-10T00:00:02")
    ) == ["g1a1"]

    [hit] = search_assets(registry, SearchFilters(verdict="tampered"))
    assert (hit.verdict, hit.model_id, hit.requester, hit.kind) == ("tampered", "tiny/sd", "alice", "generated")
    assert hit.plugins == ["provgen-shapes", "provgen.plugins.diffusers_backend"]
    assert hit.verified_at is not None and hit.verified_at.tzinfo is not None
    assert hit.created_at == at("2026-01-10")
    [external] = search_assets(registry, SearchFilters(kind="external"))
    assert external.to_dict()["created_at"] == "2026-02-20T00:00:00.000000+00:00"
    assert (external.model_id, external.prompt, external.plugins, external.verdict) == (None, None, None, None)


def _pg_folds_unicode(registry: Registry) -> bool:
    with registry.engine.connect() as conn:
        return conn.execute(text("SELECT lower('É') = 'é'")).scalar()


def test_filters_are_validated():
    with pytest.raises(ValidationError, match="verdict"):
        SearchFilters(verdict="fine")
    with pytest.raises(ValidationError, match="limit"):
        SearchFilters(limit=0)
    with pytest.raises(ValidationError, match="since"):
        SearchFilters(since=datetime(2026, 1, 1))
    assert parse_when("2026-05-01") == at("2026-05-01")
    assert parse_when("2026-05-01T13:30Z") == at("2026-05-01T13:30")
    assert parse_when("2026-05-01T15:30+02:00") == at("2026-05-01T13:30")
    with pytest.raises(ValueError, match="2026-02-30"):
        parse_when("2026-02-30")


def run(*args: str):
    return CliRunner().invoke(cli, ["registry", "search", *args], catch_exceptions=False)


def test_cli_table_and_json(db_url, data, monkeypatch):
    monkeypatch.setenv("PROVGEN_REGISTRY_URL", db_url)
    result = run("--user", "alice", "--until", "2026-01-10", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [hit["id"] for hit in hits] == [data["g1a1"], data["g1a0"]]
    assert hits[1]["verdict"] == "tampered" and hits[1]["created_at"] == "2026-01-10T00:00:00.000000+00:00"
    result = run("--verdict", "tampered")
    assert result.exit_code == 0
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "CREATED", "(UTC)", "MODEL", "PROMPT", "VERDICT"]
    assert row.split() == [
        data["g1a0"][:12],
        "2026-01-10",
        "00:00:00",
        "tiny/sd",
        "A",
        "Lighthouse",
        "at",
        "dusk",
        "tampered",
    ]
    result = run("--prompt", "nothing like it", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    result = run("--prompt", "nothing like it")
    assert result.exit_code == 0 and result.stdout == "" and "no matching assets" in result.stderr


@pytest.mark.parametrize(
    "args, option",
    [
        (["--since", "yesterday"], "--since"),
        (["--until", "2026-02-30"], "--until"),
        (["--since", "2026-13-01T00:00"], "--since"),
        (["--verdict", "fine"], "--verdict"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_cli_bad_values_are_usage_errors(args, option):
    result = run(*args)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert "Traceback" not in result.output


def test_cli_since_after_until():
    result = run("--since", "2026-03-01", "--until", "2026-02-01")
    assert result.exit_code == 2 and "--since is after --until" in result.stderr
