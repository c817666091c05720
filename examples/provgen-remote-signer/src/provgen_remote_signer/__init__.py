"""provgen plugin: sign C2PA manifests with a key held by another process (see ``server.py``).

Set ``PROVGEN_REMOTE_SIGNER_SOCKET`` (the server's Unix socket) and ``PROVGEN_REMOTE_SIGNER_CHAIN`` (the PEM
certificate chain of the server's key, leaf first). When neither is set, or ``--cert``/``PROVGEN_CERT`` names
a local certificate, the plugin answers ``None`` and the next signer (the built-in local signer) is used.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from provgen.core import hookimpl
from provgen.core.errors import KeyConfigError

from provgen_remote_signer.protocol import sign_via_socket

if TYPE_CHECKING:
    from provgen.core.config import Settings
    from provgen.provenance.remote_signing import RemoteSigningIdentity

__version__ = "0.1.0"
PLUGIN_NAME = "remote-signer"
SOCKET_ENV, CHAIN_ENV = "PROVGEN_REMOTE_SIGNER_SOCKET", "PROVGEN_REMOTE_SIGNER_CHAIN"


@hookimpl
def provide_signer(settings: Settings) -> RemoteSigningIdentity | None:
    from provgen.provenance.remote_signing import RemoteSigningIdentity

    socket_path, chain_path = os.environ.get(SOCKET_ENV), os.environ.get(CHAIN_ENV)
    if not socket_path and not chain_path:
        return None  # not configured: let the local signer answer
    if settings.cert_path:
        return None  # an explicit --cert/--key (PROVGEN_CERT/PROVGEN_KEY) wins: the local signer answers
    if not (socket_path and chain_path):
        missing = CHAIN_ENV if socket_path else SOCKET_ENV
        raise KeyConfigError(f"`{missing}`: the remote signer needs both {SOCKET_ENV} and {CHAIN_ENV}; set {missing}")
    try:
        chain_pem = Path(chain_path).read_bytes()
    except OSError as e:
        raise KeyConfigError(f"`{CHAIN_ENV}`: cannot read the certificate chain `{chain_path}`: {e.strerror}") from None
    return RemoteSigningIdentity(
        chain_pem=chain_pem,
        sign=functools.partial(sign_via_socket, socket_path),
        source=f"unix socket {socket_path} (chain {chain_path})",
    )
