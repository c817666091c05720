"""Signing keys and certificates for C2PA.

Two sources of a :class:`SigningIdentity`:

* **development keys** (:func:`init_dev_keys`, :func:`ensure_dev_keys`, :func:`load_dev_identity`): a local
  root CA and an ES256 end-entity certificate made on first use in ``$PROVGEN_HOME/keys``. Files signed with
  them read ``Trusted`` only where that root is configured as a trust anchor.
* **an organisation's certificate** (:func:`load_identity`): a PEM chain (leaf first) and a PEM private key,
  checked up front against what c2pa-rs demands of a signing certificate, so that problems surface as a
  readable :class:`~provgen.core.errors.KeyConfigError` instead of "the certificate is invalid" when signing.

Private keys are written with mode 0600 (created that way, never loosened) into a 0700 directory, and are
never logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provgen.core.errors import KeyConfigError
from provgen.provenance.certificates import (
    DOCUMENT_SIGNING,
    SUPPORTED_KEYS,
    certificate_problems,
    chain_problems,
    describe_certificate,
    describe_key_kind,
    load_chain,
    load_private_key,
    signing_alg_for,
)

try:  # POSIX only; elsewhere concurrent first use is simply not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SigningIdentity",
    "DevKeyPaths",
    "init_dev_keys",
    "ensure_dev_keys",
    "load_dev_identity",
    "load_identity",
    "describe_certificate",
    "certificate_problems",
]

log = logging.getLogger(__name__)

DEFAULT_ORGANIZATION = "provgen development"
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=5 * 365)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between machines

_CA_CERT, _CA_KEY, _SIGNER_CHAIN, _SIGNER_KEY = "ca.pem", "ca.key", "signer.pem", "signer.key"
_FILES = (_CA_CERT, _CA_KEY, _SIGNER_CHAIN, _SIGNER_KEY)
_LOCK, _COMMIT, _TMP = ".lock", ".commit", ".new"
_FIX_DEV = "run `provgen keys init --force` to make a new development key set"


@dataclass(frozen=True)
class SigningIdentity:
    """What a :class:`~provgen.provenance.c2pa_io.ManifestSigner` needs. ``repr`` never shows the key."""

    #: PEM certificates, leaf first, then intermediates (root optional)
    chain_pem: bytes
    #: unencrypted PKCS#8 PEM private key matching the leaf
    key_pem: bytes
    #: c2pa signing algorithm derived from the key: es256, es384, es512, ps256 or ed25519
    alg: str
    #: PEM certificates verification should trust for this identity (the development root CA, or b"")
    trust_anchors_pem: bytes
    #: "development" or the certificate path, for display
    source: str

    def __repr__(self) -> str:
        try:
            subject = load_chain(self.chain_pem)[0].subject.rfc4514_string()
        except Exception:
            subject = "?"
        shown = f"alg={self.alg!r}, source={self.source!r}, subject={subject!r}"
        return f"SigningIdentity({shown}, key_pem=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class DevKeyPaths:
    """The files of a development key set."""

    ca_cert: Path
    ca_key: Path
    signer_chain: Path
    signer_key: Path


# ----------------------------------------------------------------------------------------------------
# development keys


def init_dev_keys(
    keys_dir: Path, *, force: bool = False, organization: str = DEFAULT_ORGANIZATION
) -> DevKeyPaths:
    """Create a development root CA and an ES256 signing certificate in ``keys_dir``.

    Refuses to replace an existing set unless ``force``. The four files are replaced as one set: a crash
    leaves either the old set or the new one (an interrupted replacement is finished or rolled back on the
    next call).
    """
    keys_dir = Path(keys_dir)
    with _dev_lock(keys_dir):
        paths = _dev_paths(keys_dir)
        existing = [p.name for p in dataclasses.astuple(paths) if p.exists()]
        if existing and not force:
            raise KeyConfigError(
                f"`{keys_dir}` already holds development keys ({', '.join(existing)}); pass `--force` "
                "(force=True) to replace them. Files signed with the old keys then verify as Trusted only "
                "where the old `ca.pem` is still a trust anchor."
            )
        _write_set(keys_dir, _make_dev_set(organization))
        log.info("created development signing keys in %s", keys_dir)
        return paths


def ensure_dev_keys(keys_dir: Path) -> tuple[DevKeyPaths, bool]:
    """The development key files, created on first use; the bool says whether they were made now."""
    keys_dir = Path(keys_dir)
    with _dev_lock(keys_dir):
        return _ensure_locked(keys_dir)


def load_dev_identity(keys_dir: Path) -> SigningIdentity:
    """The development identity from ``keys_dir`` (created on first use); it trusts the development root."""
    keys_dir = Path(keys_dir)
    with _dev_lock(keys_dir):
        paths, _ = _ensure_locked(keys_dir)
        ca_pem = _read(paths.ca_cert, "development CA certificate")
        chain_pem = _read(paths.signer_chain, "development certificate chain")
        key_pem = _read(paths.signer_key, "development private key")
    _warn_if_exposed(paths.signer_key)
    try:
        ca = load_chain(ca_pem, paths.ca_cert)[0]
        chain = load_chain(chain_pem, paths.signer_chain)
        key = load_private_key(key_pem, None, paths.signer_key)
    except KeyConfigError as e:
        raise KeyConfigError(f"{e}; or {_FIX_DEV}") from None
    problems = chain_problems(chain, key)
    try:
        chain[0].verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        problems.append(f"the signing certificate was not issued by `{paths.ca_cert}`")
    if problems:
        raise KeyConfigError(
            f"development keys in `{keys_dir}` are unusable: {'; '.join(problems)}; {_FIX_DEV}"
        )
    return _identity(chain_pem, key, trust_anchors_pem=ca_pem, source="development")


def _ensure_locked(keys_dir: Path) -> tuple[DevKeyPaths, bool]:
    paths = _dev_paths(keys_dir)
    present = [p.exists() for p in dataclasses.astuple(paths)]
    if all(present):
        return paths, False
    if any(present):
        missing = [p.name for p, ok in zip(dataclasses.astuple(paths), present, strict=True) if not ok]
        raise KeyConfigError(
            f"development keys in `{keys_dir}` are incomplete (missing {', '.join(missing)}); {_FIX_DEV}"
        )
    _write_set(keys_dir, _make_dev_set(DEFAULT_ORGANIZATION))
    log.info("created development signing keys in %s", keys_dir)
    return paths, True


def _dev_paths(keys_dir: Path) -> DevKeyPaths:
    return DevKeyPaths(*(keys_dir / name for name in _FILES))


@contextlib.contextmanager
def _dev_lock(keys_dir: Path) -> Iterator[None]:
    """Create ``keys_dir`` (0700), serialise key-set changes between processes, finish an interrupted one."""
    try:
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(keys_dir.stat().st_mode) & 0o077:
            os.chmod(keys_dir, 0o700)  # it holds private keys: owner only
        fd = os.open(keys_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise KeyConfigError(
            f"cannot use keys directory `{keys_dir}`: {e.strerror}; check its permissions"
        ) from e
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _recover(keys_dir)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _recover(keys_dir: Path) -> None:
    """Finish a set replacement whose commit marker was written, or drop one that never reached it."""
    if (keys_dir / _COMMIT).exists():
        for name in _FILES:
            tmp = keys_dir / (name + _TMP)
            if tmp.exists():
                os.replace(tmp, keys_dir / name)
        _fsync_dir(keys_dir)
        (keys_dir / _COMMIT).unlink()
    else:
        for name in _FILES:
            (keys_dir / (name + _TMP)).unlink(missing_ok=True)
    _fsync_dir(keys_dir)


def _write_set(keys_dir: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` as ``name.new`` (keys 0600 from creation), commit with a marker, rename into place."""
    try:
        for name, data in files.items():
            _write_new_file(keys_dir / (name + _TMP), data, 0o600 if name.endswith(".key") else 0o644)
        _fsync_dir(keys_dir)
        _write_new_file(keys_dir / _COMMIT, b"", 0o600)  # the commit point: from here on the new set wins
        _fsync_dir(keys_dir)
        for name in files:
            os.replace(keys_dir / (name + _TMP), keys_dir / name)
        _fsync_dir(keys_dir)
        (keys_dir / _COMMIT).unlink()
        _fsync_dir(keys_dir)
    except OSError as e:
        raise KeyConfigError(f"cannot write keys to `{keys_dir}`: {e.strerror}; check its permissions") from e


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. Windows)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_dev_set(organization: str, leaf_lifetime: dt.timedelta = LEAF_LIFETIME) -> dict[str, bytes]:
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    def key_usage(*, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organization} root CA"))
        .issuer_name(name(f"{organization} root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organization} signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + leaf_lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    return {
        _CA_CERT: ca_pem,
        _CA_KEY: _pkcs8(ca_key),
        _SIGNER_CHAIN: leaf.public_bytes(serialization.Encoding.PEM) + ca_pem,
        _SIGNER_KEY: _pkcs8(key),
    }


# ----------------------------------------------------------------------------------------------------
# an organisation's certificate


def load_identity(cert_path: Path, key_path: Path, *, password: bytes | None = None) -> SigningIdentity:
    """Load and check an organisation's PEM certificate chain (leaf first) and PEM private key.

    Raises :class:`KeyConfigError` naming the file and the unmet requirement. The trust anchors of such an
    identity come from configuration, so ``trust_anchors_pem`` is empty.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    chain_pem = _read(cert_path, "certificate chain")
    key_data = _read(key_path, "private key")
    if b"-----BEGIN" not in chain_pem:
        raise KeyConfigError(
            f"certificate chain `{cert_path}` is not PEM; convert it, e.g. "
            f"`openssl x509 -inform der -in {cert_path} -out chain.pem`"
        )
    if b"CERTIFICATE-----" not in chain_pem and b"PRIVATE KEY-----" in chain_pem:
        raise KeyConfigError(
            f"`{cert_path}` holds a private key, not certificates; were the certificate and key swapped?"
        )
    chain = load_chain(chain_pem, cert_path)
    key = load_private_key(key_data, password, key_path)
    _warn_if_exposed(key_path)
    if signing_alg_for(key.public_key()) is None:
        raise KeyConfigError(f"private key `{key_path}` is {describe_key_kind(key.public_key())}; {SUPPORTED_KEYS}")
    problems = chain_problems(chain, key)
    if problems:
        raise KeyConfigError(f"certificate `{cert_path}` cannot sign C2PA manifests: {'; '.join(problems)}")
    return _identity(chain_pem, key, trust_anchors_pem=b"", source=str(cert_path))


def _identity(
    chain_pem: bytes, key: PrivateKeyTypes, *, trust_anchors_pem: bytes, source: str
) -> SigningIdentity:
    alg = signing_alg_for(key.public_key())
    assert alg is not None  # checked by chain_problems
    return SigningIdentity(chain_pem, _pkcs8(key), alg, trust_anchors_pem, source)


# ----------------------------------------------------------------------------------------------------
# helpers


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyConfigError(f"{what} file `{path}` does not exist; check the path") from None
    except IsADirectoryError:
        raise KeyConfigError(f"{what} path `{path}` is a directory; give the PEM file") from None
    except OSError as e:
        raise KeyConfigError(
            f"cannot read {what} file `{path}`: {e.strerror}; check its permissions"
        ) from None


def _pkcs8(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _warn_if_exposed(key_path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            log.warning(
                "private key file %s is readable by other users (mode %o); run `chmod 600` on it",
                key_path,
                mode,
            )
