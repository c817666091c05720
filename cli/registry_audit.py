"""``provgen registry migrate|check|verify|checkpoint``: schema upkeep and tamper evidence."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from provgen.cli._common import emit_json, json_option, settings_from


@click.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Schema revision to migrate to.")
@json_option
def migrate(revision: str, as_json: bool) -> None:
    """Create or upgrade the registry's schema (PROVGEN_REGISTRY_URL) to REVISION.

    Records written before the audit log existed are appended to it once, in creation order. Other
    commands create a blank registry on first use but refuse an older schema until this has run.
    """
    from provgen.provenance.registry import db

    url = settings_from().registry_url
    engine = db.make_engine(url)
    try:
        before = db.ensure_known_revision(engine)
        db.upgrade(engine, revision)
        after = db.current_revision(engine)
    finally:
        engine.dispose()
    if as_json:
        emit_json({"url": db.mask_url(url), "from": before, "to": after})
    elif before == after:
        click.echo(f"{db.mask_url(url)}: already at schema revision {after}")
    else:
        click.echo(f"{db.mask_url(url)}: migrated from {before or 'blank'} to {after}")


@click.command("check")
@json_option
def check_cmd(as_json: bool) -> None:
    """Check that the registry is at the newest schema and that its tables match provgen's models.

    Exit status 1 when the database is behind, or has drifted from the models (tables or columns changed by
    hand); 0 when all is well.
    """
    from provgen.core.errors import RegistryError
    from provgen.provenance.registry import db

    url = settings_from().registry_url
    engine = db.make_engine(url)
    problems: list[str] = []
    try:
        current, head = db.ensure_known_revision(engine), db.head_revision()
        if current != head:
            problems.append(
                f"schema revision is {current or 'blank'}, this provgen needs {head}: run `provgen registry migrate`"
            )
        else:
            try:
                db.check(engine)
            except RegistryError as error:
                problems.append(str(error))
    finally:
        engine.dispose()
    if as_json:
        emit_json(
            {"url": db.mask_url(url), "revision": current, "head": head, "ok": not problems, "problems": problems}
        )
    else:
        for problem in problems:
            click.echo(f"problem: {problem}")
        if not problems:
            click.echo(f"{db.mask_url(url)}: schema {current}, matches the models")
    sys.exit(1 if problems else 0)


@click.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An exported checkpoint (from `registry checkpoint --export`) to hold the log to; repeatable.",
)
@click.option("--chain-only", is_flag=True, help="Check the chain links only, not every record against it.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Processes to hash with (default: one per CPU core for large registries, else 1).",
)
@json_option
def verify_cmd(checkpoint_files: tuple[Path, ...], chain_only: bool, workers: int | None, as_json: bool) -> None:
    """Recompute the audit log's hash chain and every record against it; check signed checkpoints.

    \b
    Reports, by record id and log position, records that were changed, deleted or inserted behind the
    registry's back, log entries that were altered, deleted or reordered, and checkpoints the log no longer
    matches. Exit status 1 when anything is wrong.
    """
    from provgen.core.errors import RegistryError
    from provgen.provenance.registry import open_registry
    from provgen.provenance.registry.checkpoints import from_export

    kept = []
    for path in checkpoint_files:
        try:
            kept.append(from_export(json.loads(path.read_text()), str(path)))
        except (OSError, ValueError) as error:
            raise RegistryError(f"`--checkpoint`: cannot read {str(path)!r} as a checkpoint: {error}") from None
    registry = open_registry(settings_from().registry_url, upgrade="blank")
    try:
        report = registry.verify_chain(records=not chain_only, checkpoints=kept, workers=workers or "auto")
    finally:
        registry.close()
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(
            f"{registry.url}: {report.entries} log entries, {report.records} records checked, "
            f"head {report.head_seq}:{report.head_hash[:16]}"
        )
        for point in report.checkpoints:
            state = "ok" if point["valid"] else "FAILED"
            click.echo(f"checkpoint {point['id'][:12]} at entry {point['seq']} by {point['signer']}: {state}")
        for problem in report.problems:
            click.echo(f"PROBLEM {problem}")
        click.echo("audit log intact" if report.ok else f"{len(report.problems)} problem(s) found")
    sys.exit(0 if report.ok else 1)


@click.command("checkpoint")
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the signed checkpoint to this JSON file, for an auditor to keep.",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM certificate chain to sign with (default: the C2PA signing identity).",
)
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM private key of --cert.")
@json_option
def checkpoint_cmd(export_path: Path | None, cert: Path | None, key: Path | None, as_json: bool) -> None:
    """Sign the current head of the audit log with the signing key and store the signature in the registry.

    An auditor who keeps the exported file can later prove the log was not rewritten since
    (`provgen registry verify --checkpoint FILE`).
    """
    from provgen.core.errors import SigningError
    from provgen.core.plugins import call_hook, get_plugin_manager
    from provgen.provenance.registry import open_registry
    from provgen.provenance.registry.checkpoints import to_export

    settings = settings_from(cert_path=cert, key_path=key)
    identity = call_hook(get_plugin_manager(), "provide_signer", settings=settings)
    if identity is None:
        raise SigningError("no plugin provided a signing identity (hook `provide_signer`)")
    if not hasattr(identity, "key_pem"):  # a RemoteSigningIdentity: checkpoints sign with a local key
        raise SigningError(f"a checkpoint is signed with a local key, but the signing identity `{identity.source}` is "
                           "remote; pass --cert and --key")
    registry = open_registry(settings.registry_url, upgrade="blank")
    try:
        record = registry.checkpoint(chain_pem=identity.chain_pem, key_pem=identity.key_pem, alg=identity.alg)
    finally:
        registry.close()
    document = to_export(record)
    if export_path is not None:
        _write_atomically(export_path, json.dumps(document, indent=2) + "\n")
    if as_json:
        emit_json(document | {"exported_to": str(export_path) if export_path else None})
    else:
        click.echo(
            f"checkpoint {record.id} signs entry {record.seq} ({record.head_hash}) by {record.signer}"
            + (f"; written to {export_path}" if export_path else "")
        )


def _write_atomically(path: Path, text: str) -> None:
    from provgen.core.errors import ValidationError

    target = path.expanduser().resolve()
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temp, target)
    except OSError as error:
        raise ValidationError("--export", f"cannot write {str(path)!r}: {error.strerror or error}") from None


#: subcommands of ``provgen registry`` defined here
REGISTRY_COMMANDS = [migrate, check_cmd, verify_cmd, checkpoint_cmd]
