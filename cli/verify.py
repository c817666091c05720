"""``provgen verify``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provgen.cli._common import emit_json, json_option, settings_from


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--no-record",
    is_flag=True,
    help="Do not store the results in the registry (by default each check is recorded, audited, and "
    "searchable with `provgen registry search --verdict`).",
)
@click.option(
    "--trust-anchors",
    "anchor_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A PEM file of certificates to trust as C2PA signing roots, on top of PROVGEN_TRUST_ANCHORS and the "
    "development root; repeatable. A signature that validates but chains to no trusted root reads Valid, "
    "not Trusted.",
)
@click.option(
    "--reattach",
    "reattach_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For one recovered FILE: write a copy to this path, signed with a manifest that carries the "
    "registry's original manifest as its parent ingredient.",
)
@json_option
def verify(files: tuple[Path, ...], no_record: bool, anchor_files: tuple[Path, ...], reattach_to: Path | None,
           as_json: bool) -> None:
    """Check whether FILES were made by provgen, from what, and whether they were changed.

    \b
    Verdicts: verified (valid C2PA manifest, asset in the registry), recovered (no manifest, but the
    watermark, fingerprint or file hash finds the record), tampered (manifest present but invalid),
    unknown (no evidence). Exit status 0 when every file is verified or recovered, 1 otherwise.
    --reattach OUT writes a copy of one recovered FILE whose new manifest carries the registry's original
    manifest as its parent ingredient (see docs/provenance.md).
    """
    from provgen.core.plugins import get_plugin_manager
    from provgen.core.registries import watermark_methods
    from provgen.provenance.registry import open_registry
    from provgen.provenance.trust import trust_anchors_pem
    from provgen.provenance.verify import verify_file

    settings = settings_from()
    if anchor_files:
        settings = settings.replace(trust_anchor_paths=(*settings.trust_anchor_paths, *anchor_files))
    if reattach_to is not None:
        _check_reattach_target(files, reattach_to)
    registry = open_registry(settings.registry_url, upgrade="blank")
    methods = [entry.item for entry in watermark_methods(get_plugin_manager()).values()]
    anchors = trust_anchors_pem(settings)
    try:
        reports = [
            verify_file(
                path,
                registry=registry,
                methods=methods,
                trust_anchors_pem=anchors,
                max_distance=settings.fingerprint_max_distance,
                max_phash=settings.fingerprint_max_phash,
                max_dhash=settings.fingerprint_max_dhash,
                marking_method=settings.watermark_method,
            )
            for path in files
        ]
        if reattach_to is not None:
            _reattach(settings, registry, reports[0], files[0], reattach_to)
        if not no_record:
            _record(registry, reports, settings.user)
    finally:
        registry.close()
    if as_json:
        emit_json([report.to_dict() for report in reports])
    else:
        for report in reports:
            click.echo(_describe(report))
    for report in reports:
        if report.error:
            click.echo(f"error: {report.path}: {report.error}", err=True)
    sys.exit(0 if all(report.ok for report in reports) else 1)


def _check_reattach_target(files: tuple[Path, ...], target: Path) -> None:
    from provgen.core.errors import ReattachError

    if len(files) != 1:
        raise ReattachError(f"`--reattach`: give exactly one FILE with --reattach (got {len(files)})")
    if target.exists():
        raise ReattachError(f"`--reattach`: {str(target)!r} already exists; choose a new path")
    if not target.parent.is_dir():
        raise ReattachError(f"`--reattach`: the folder {str(target.parent)!r} does not exist")


def _reattach(settings, registry, report, source: Path, target: Path) -> None:  # type: ignore[no-untyped-def]
    """Sign the re-attached copy and write it atomically (temporary file, then rename)."""
    import hashlib
    import os
    import tempfile

    from provgen.core.plugins import get_plugin_manager
    from provgen.provenance.layer import ProvenanceLayer, software_versions
    from provgen.provenance.reattach import reattach

    layer = ProvenanceLayer(settings, get_plugin_manager())
    try:
        signed = reattach(source.read_bytes(), report, registry=registry, signer=layer.signer,
                          software_version=software_versions()["provgen"])
    finally:
        layer.close()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".provgen-", suffix=target.suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(signed.data)
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, target)  # fails if the target appeared meanwhile: never overwrite
    finally:
        os.unlink(temporary)
    report.reattached = {"path": str(target), "sha256": hashlib.sha256(signed.data).hexdigest(),
                         "manifest_label": signed.label}


def _record(registry, reports, requester: str) -> None:  # type: ignore[no-untyped-def]
    """Store each report (without the asset record it embeds); a registry that refuses writes (e.g. a
    read-only auditor account) costs a warning, not the verification."""
    from provgen.core.errors import RegistryError

    for report in reports:
        stored = {key: value for key, value in report.to_dict().items() if key != "record"}
        try:
            report.verification_id = registry.record_verification(stored, requester=requester)
        except RegistryError as error:
            click.echo(f"warning: results not recorded in the registry ({error}); use --no-record to skip", err=True)
            return


def _describe(report) -> str:  # type: ignore[no-untyped-def]
    c2pa = report.c2pa
    parts = [f"{report.path}: {report.verdict.upper()}"]
    if report.asset_id:
        parts.append(f"asset {report.asset_id} (found by {report.match})")
    parts.append(f"c2pa {c2pa['state']}" + (f" {','.join(c2pa['codes'])}" if c2pa["codes"] else ""))
    wm = report.watermark
    parts.append(f"watermark {wm['id']} ({wm.get('method')})" if wm["found"] else "no watermark")
    for stock in getattr(report, "stock_watermarks", None) or []:
        parts.append(f"stock watermark {stock['name']} ({stock['method']}, bit accuracy {stock['bit_accuracy']})")
    if report.record:
        parts.append(f"model {report.record['generation']['model_id']}")
    if report.reattached:
        parts.append(f"manifest re-attached in {report.reattached['path']}")
    return "; ".join(parts)


COMMANDS = [verify]
