"""Re-attach the registry's copy of an image's manifest to a copy that lost it (``provgen verify --reattach``).

A copy whose metadata was stripped, or that was re-encoded, no longer carries its C2PA manifest, and the
original manifest cannot simply be put back: its hard binding (``c2pa.hash.data``) covers the original bytes,
so it would read as tampered. Instead provgen signs a *new* manifest for the copy, whose ``parentOf``
ingredient carries the original manifest store from the registry, with c2pa's validation results of that
store against the copy (typically ``assertion.dataHash.mismatch``: expected, the bytes changed). Its
``c2pa.opened`` action names that ingredient, and an ``io.provgen.reattachment`` assertion records how the
registry record was found (watermark, fingerprint and its distance, or file hash). Nothing is re-attached
silently: only on request, only to a file that verify recovered, and into a new file.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from PIL import Image

from provgen.core.errors import ReattachError
from provgen.provenance.c2pa_io import Ingredient, SignedImage, mime_for_format

if TYPE_CHECKING:
    from provgen.provenance.c2pa_io import ManifestSigner
    from provgen.provenance.registry import Registry
    from provgen.provenance.verify import VerifyReport

__all__ = ["REATTACHMENT_ASSERTION", "ReattachError", "reattach"]

REATTACHMENT_ASSERTION = "io.provgen.reattachment"


def reattach(
    data: bytes, report: VerifyReport, *, registry: Registry, signer: ManifestSigner, software_version: str
) -> SignedImage:
    """A copy of ``data`` (the file ``report`` describes) signed with a manifest whose parent ingredient
    carries the registry's original manifest store.

    :raises ReattachError: the file was not recovered (its own manifest is intact or invalid, or no record
        was found), or the registry holds no manifest for the asset.
    """
    if report.verdict != "recovered" or report.asset_id is None:
        why = {
            "verified": "it still carries its valid manifest; there is nothing to re-attach",
            "tampered": "its own manifest is invalid (the file was changed after signing); provgen does not "
            "sign over a tampered manifest",
            "unknown": "no registry record was found for it (no watermark, fingerprint or hash match)",
        }.get(report.verdict, f"its verdict is {report.verdict}")
        raise ReattachError(f"`--reattach`: cannot re-attach a manifest to {report.path!r}: {why}")
    asset = registry.get_asset(report.asset_id)
    if not asset.manifest_store or not asset.manifest_label:
        raise ReattachError(
            f"`--reattach`: the registry holds no manifest for asset {asset.id} (an input recorded from "
            "outside, not an image provgen signed)"
        )
    with Image.open(io.BytesIO(data)) as probe:
        mime = mime_for_format((probe.format or "").lower())
    agent = {"name": "provgen", "version": software_version}
    original = Ingredient(
        title=f"{asset.id} (original, manifest from the provgen registry)",
        mime=mime,
        data=data,
        relationship="parentOf",
        label="original",
        role="original",
        manifest_store=asset.manifest_store,
    )
    evidence: dict[str, Any] = {
        "asset_id": asset.id,
        "generation_id": asset.generation_id,
        "original_manifest": asset.manifest_label,
        "original_sha256": asset.sha256,
        "file_sha256": report.sha256,
        "found_by": report.match,
        "watermark": report.watermark,
        "reattached_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if report.match == "fingerprint":
        evidence["fingerprint_distance"] = report.fingerprint.get("distance")
    assertions: list[dict[str, Any]] = [
        {
            "label": "c2pa.actions",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.opened",
                        "softwareAgent": agent,
                        "description": f"manifest of provgen asset {asset.id} re-attached from the registry "
                        f"(record found by {report.match})",
                        "parameters": {"ingredientIds": ["original"]},
                    }
                ]
            },
        },
        {"label": REATTACHMENT_ASSERTION, "data": evidence},
    ]
    if report.watermark.get("found") and asset.watermark_method:
        from provgen.core.plugins import get_plugin_manager
        from provgen.core.registries import watermark_methods

        methods = {entry.item.name: entry.item for entry in watermark_methods(get_plugin_manager()).values()}
        method = methods.get(report.watermark.get("method") or "")
        if method is not None:
            binding = {"alg": method.soft_binding_alg, "blocks": [{"scope": {}, "value": report.watermark["id"]}]}
            assertions.append({"label": "c2pa.soft-binding", "data": binding})
    manifest = {
        "claim_generator_info": [agent],
        "title": f"{asset.id} (manifest re-attached)",
        "assertions": assertions,
    }
    return signer.sign(data, mime, manifest, [original])
