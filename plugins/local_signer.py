"""Built-in plugin: sign with ``PROVGEN_CERT``/``PROVGEN_KEY`` when given (``PROVGEN_KEY_PASSWORD`` for an
encrypted key), else with the identity stored by ``provgen keys import``, else with development keys (created
on first use)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from provgen.core.errors import KeyConfigError
from provgen.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from provgen.core.config import Settings
    from provgen.provenance.keys import SigningIdentity

PLUGIN_NAME = "local-signer"


@hookimpl(trylast=True)
def provide_signer(settings: Settings) -> SigningIdentity:
    from provgen.provenance.keys import ensure_dev_keys, load_dev_identity, load_identity
    from provgen.provenance.org_keys import load_imported_identity

    if settings.cert_path or settings.key_path:
        if not (settings.cert_path and settings.key_path):
            missing = "--key (PROVGEN_KEY)" if settings.cert_path else "--cert (PROVGEN_CERT)"
            raise KeyConfigError(f"`{missing.split()[0]}`: a certificate and a key go together; pass {missing} too")
        password = os.environ.get("PROVGEN_KEY_PASSWORD")  # for an encrypted PROVGEN_KEY
        return load_identity(settings.cert_path, settings.key_path, password=password.encode() if password else None)
    imported = load_imported_identity(settings.keys_dir)  # `provgen keys import`
    if imported is not None:
        return imported
    _, created = ensure_dev_keys(settings.keys_dir)
    if created:
        print(f"provgen: created development signing keys in {settings.keys_dir} "
              "(not trusted outside this machine; see `provgen keys --help`)", file=sys.stderr)
    return load_dev_identity(settings.keys_dir)
