"""Built-in plugins: ordinary pluggy plugins that use only the public hooks."""

from __future__ import annotations

#: loaded, in this order, by every plugin manager (see provgen.core.plugins)
DEFAULT_PLUGINS = (
    "provgen.plugins.schedulers",
    "provgen.plugins.diffusers_sampler",
    "provgen.plugins.imwatermark_compat",  # before the provgen marks: verify tries it after them
    "provgen.plugins.wm1_watermark",
    "provgen.plugins.grid_watermark",
    "provgen.plugins.local_signer",
    "provgen.plugins.shapes_model",
    "provgen.plugins.postprocess",
    "provgen.plugins.img2img",
    "provgen.plugins.lora",
    "provgen.plugins.controlnet",
    "provgen.plugins.ip_adapter",
    "provgen.plugins.blocklist",
)

__all__ = ["DEFAULT_PLUGINS"]
