"""Built-in plugin: sample by calling the diffusers pipeline (answers ``sample`` last)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provgen.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from provgen.core.context import GenerationContext

PLUGIN_NAME = "diffusers"


@hookimpl(trylast=True)
def sample(context: GenerationContext) -> list[Any]:
    import torch

    with torch.inference_mode():
        output = context.pipeline(**context.call_arguments)
    return list(output.images)
