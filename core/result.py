"""What a generation returns: every image already watermarked, signed, written and registered."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GeneratedImage", "GenerationResult"]


@dataclass(frozen=True)
class GeneratedImage:
    asset_id: str
    path: Path
    sha256: str
    watermark_id: int
    watermark_method: str
    seed: int
    batch_index: int
    format: str
    width: int
    height: int
    phash: str
    manifest_label: str

    def open(self) -> Any:
        """The written file as a PIL image."""
        from PIL import Image

        return Image.open(self.path)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["watermark_id"] = f"{self.watermark_id:012x}"
        return data


@dataclass(frozen=True)
class GenerationResult:
    generation_id: str
    images: tuple[GeneratedImage, ...]
    model_id: str
    model_hash: str
    pipeline_class: str
    scheduler: str
    recipe: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation_id": self.generation_id,
            "model_id": self.model_id,
            "model_hash": self.model_hash,
            "pipeline_class": self.pipeline_class,
            "scheduler": self.scheduler,
            "images": [image.to_dict() for image in self.images],
            "timings_ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
        }
