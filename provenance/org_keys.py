"""An organisation's signing identity: import it once into ``$PROVGEN_HOME/keys/org``, load it, watch its expiry.

``provgen keys import --chain chain.pem --key key.pem`` (or ``--pkcs12 bundle.p12``) checks the chain and key
against what c2pa-rs demands (:func:`provgen.provenance.certificates.chain_problems`), then stores the chain and
the key, decrypted, as PKCS#8 PEM with mode 0600 in a 0700 folder, so that signing needs no password at run time.
Passwords come from ``PROVGEN_KEY_PASSWORD`` or a prompt, never from the command line (it would land in shell
history and ``ps``).

The local signer (``plugins/local_signer.py``) signs with, in this order: ``PROVGEN_CERT``/``PROVGEN_KEY``,
the imported identity, the development keys.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from provgen.core.errors import KeyConfigError
from provgen.provenance.certificates import SUPPORTED_KEYS, chain_problems, describe_key_kind, signing_alg_for
from provgen.provenance.keys import SigningIdentity, _identity, _read, _write_new_file, load_identity

__all__ = ["ORG_DIR", "EXPIRY_WARNING_DAYS", "import_identity", "load_imported_identity", "expiry_warning"]

#: subfolder of the keys folder holding the imported identity
ORG_DIR = "org"
#: warn when the signing certificate expires within this many days
EXPIRY_WARNING_DAYS = 30
_CHAIN, _KEY = "signer.pem", "signer.key"


def import_identity(
    keys_dir: Path,
    *,
    chain_path: Path | None = None,
    key_path: Path | None = None,
    pkcs12_path: Path | None = None,
    password: bytes | None = None,
    force: bool = False,
) -> SigningIdentity:
    """Check and store an organisation's identity from a PEM chain + PEM key, or from a PKCS#12 bundle.

    :raises KeyConfigError: bad or mismatched files, a wrong or missing password, a certificate c2pa would
        refuse, or an existing import without ``force``. Nothing is written then.
    """
    if (pkcs12_path is None) == (chain_path is None and key_path is None):
        raise KeyConfigError("give either `--chain` and `--key` (PEM files) or `--pkcs12` (a .p12/.pfx bundle)")
    if pkcs12_path is None:
        if chain_path is None or key_path is None:
            missing = "--key" if key_path is None else "--chain"
            raise KeyConfigError(f"`{missing}`: a certificate chain and a private key go together; give {missing}")
        identity = load_identity(chain_path, key_path, password=password)
        source = str(chain_path)
    else:
        identity = _from_pkcs12(Path(pkcs12_path), password)
        source = str(pkcs12_path)
    target = Path(keys_dir) / ORG_DIR
    if (target / _CHAIN).exists() and not force:
        raise KeyConfigError(
            f"an identity is already imported in `{target}`; pass `--force` to replace it (images signed with "
            "the old certificate stay verifiable where its root is a trust anchor)"
        )
    _store(target, identity.chain_pem, identity.key_pem)
    return SigningIdentity(identity.chain_pem, identity.key_pem, identity.alg, b"", f"{target / _CHAIN} ({source})")


def load_imported_identity(keys_dir: Path) -> SigningIdentity | None:
    """The identity stored by :func:`import_identity`, or ``None`` when nothing was imported."""
    target = Path(keys_dir) / ORG_DIR
    if not (target / _CHAIN).exists():
        return None
    return load_identity(target / _CHAIN, target / _KEY)


def expiry_warning(identity: SigningIdentity, *, now: dt.datetime | None = None) -> str | None:
    """A warning when the leaf certificate expires within :data:`EXPIRY_WARNING_DAYS` days (or has expired)."""
    leaf = x509.load_pem_x509_certificates(identity.chain_pem)[0]
    moment = now or dt.datetime.now(dt.UTC)
    left = leaf.not_valid_after_utc - moment
    if left > dt.timedelta(days=EXPIRY_WARNING_DAYS):
        return None
    when = leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    state = "has expired" if left.total_seconds() <= 0 else f"expires in {left.days} day(s)"
    return (
        f"the signing certificate `{identity.source}` {state} ({when}); renew it. Manifests signed without a "
        "timestamp (PROVGEN_TSA_URL) stop validating once it expires"
    )


def _from_pkcs12(path: Path, password: bytes | None) -> SigningIdentity:
    data = _read(path, "PKCS#12 bundle")
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        hint = "check PROVGEN_KEY_PASSWORD" if password is not None else "set PROVGEN_KEY_PASSWORD or enter it"
        raise KeyConfigError(
            f"PKCS#12 bundle `{path}` could not be opened (wrong password or not PKCS#12); {hint}"
        ) from None
    if key is None or cert is None:
        raise KeyConfigError(f"PKCS#12 bundle `{path}` must hold a private key and its certificate")
    if signing_alg_for(key.public_key()) is None:
        raise KeyConfigError(f"the key in `{path}` is {describe_key_kind(key.public_key())}; {SUPPORTED_KEYS}")
    chain = [cert, *extra]  # the leaf first, then the CA certificates the bundle carries
    problems = chain_problems(chain, key)
    if problems:
        raise KeyConfigError(f"the certificate in `{path}` cannot sign C2PA manifests: {'; '.join(problems)}")
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return _identity(chain_pem, key, trust_anchors_pem=b"", source=str(path))


def _store(target: Path, chain_pem: bytes, key_pem: bytes) -> None:
    try:
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target, 0o700)
        for name, data, mode in ((_KEY, key_pem, 0o600), (_CHAIN, chain_pem, 0o644)):
            _write_new_file(target / (name + ".new"), data, mode)
        # the key first, the chain last: a chain without its key is never left behind as "imported"
        os.replace(target / (_KEY + ".new"), target / _KEY)
        os.replace(target / (_CHAIN + ".new"), target / _CHAIN)
    except OSError as e:
        raise KeyConfigError(f"cannot write the identity to `{target}`: {e.strerror}; check its permissions") from e
