"""Registry records with realistic, random field values, for the registry tests (one place, not one per file).

``fake_generation(num_assets=2, asset_fields=[{...}], **fields)`` builds an unsaved Generation with its
Assets; ``fake_asset(batch_index, **fields)`` one Asset. Ids, hashes and watermark ids are fresh random
values (a 48-bit watermark id collides with odds of about n²/2⁴⁹); pass ``watermark_id=`` from
``Registry.new_ids()`` where a test needs it checked against the registry.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from provgen.provenance.registry import Asset, Generation
from provgen.provenance.registry.models import new_id

__all__ = ["fake_asset", "fake_generation"]


def fake_asset(batch_index: int = 0, **fields: Any) -> Asset:
    asset_id = fields.get("id") or new_id()
    values: dict[str, Any] = {
        "id": asset_id,
        "batch_index": batch_index,
        "seed": 1234 + batch_index,
        "sha256": secrets.token_hex(32),
        "watermark_id": secrets.randbelow(2**48 - 2) + 1,
        "watermark_method": "provgen-grid/1",
        "phash": secrets.token_hex(8),
        "format": "png",
        "width": 64,
        "height": 48,
        "size_bytes": 4096,
        "path": f"/out/{asset_id}.png",
        "manifest_label": f"urn:c2pa:{asset_id}",
        "manifest_store": b"\x00c2pa" + secrets.token_bytes(64),
    }
    values.update(fields)
    return Asset(**values)


def fake_generation(num_assets: int = 1, asset_fields: Sequence[dict[str, Any]] = (), **fields: Any) -> Generation:
    values: dict[str, Any] = {
        "id": new_id(),
        "requester": "alice@example.org",
        "model_id": "hf-internal-testing/tiny-stable-diffusion-torch",
        "model_hash": secrets.token_hex(32),
        "pipeline_class": "StableDiffusionPipeline",
        "scheduler": "EulerDiscreteScheduler",
        "prompt": "a lighthouse at dusk",
        "negative_prompt": None,
        "seed": 2**63 - 1,
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "width": 64,
        "height": 48,
        "num_images": num_assets,
        "recipe": {"prompt": "a lighthouse at dusk", "steps": 2, "nested": {"x": [1, 2.5, None]}},
        "plugins": [{"name": "provgen.plugins.diffusers_backend", "version": "0.1.0"}],
    }
    values.update(fields)
    generation = Generation(**values)
    extra = list(asset_fields) + [{}] * num_assets
    generation.assets = [fake_asset(i, **extra[i]) for i in range(num_assets)]
    return generation
