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
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from provgen.core.errors import KeyConfigError

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

#: id-kp-documentSigning (RFC 9336); c2pa-rs 0.91 only accepts it alone with a custom EKU trust config
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
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
            subject = _load_chain(self.chain_pem)[0].subject.rfc4514_string()
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
        ca = _load_chain(ca_pem, paths.ca_cert)[0]
        chain = _load_chain(chain_pem, paths.signer_chain)
        key = _load_key(key_pem, None, paths.signer_key)
    except KeyConfigError as e:
        raise KeyConfigError(f"{e}; or {_FIX_DEV}") from None
    problems = _problems(chain, key)
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


def _make_dev_set(organization: str) -> dict[str, bytes]:
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
        .not_valid_after(now + LEAF_LIFETIME)
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
    chain = _load_chain(chain_pem, cert_path)
    key = _load_key(key_data, password, key_path)
    _warn_if_exposed(key_path)
    if _alg_for(key.public_key()) is None:
        raise KeyConfigError(f"private key `{key_path}` is {_key_kind(key.public_key())}; {_SUPPORTED_KEYS}")
    problems = _problems(chain, key)
    if problems:
        raise KeyConfigError(f"certificate `{cert_path}` cannot sign C2PA manifests: {'; '.join(problems)}")
    return _identity(chain_pem, key, trust_anchors_pem=b"", source=str(cert_path))


def _identity(
    chain_pem: bytes, key: PrivateKeyTypes, *, trust_anchors_pem: bytes, source: str
) -> SigningIdentity:
    alg = _alg_for(key.public_key())
    assert alg is not None  # checked by _problems
    return SigningIdentity(chain_pem, _pkcs8(key), alg, trust_anchors_pem, source)


def certificate_problems(chain_pem: bytes, key_pem: bytes | None = None) -> list[str]:
    """Every reason c2pa-rs would refuse to sign with this chain (and key), as sentences; [] if none."""
    try:
        chain = _load_chain(chain_pem)
        key = _load_key(key_pem, None) if key_pem is not None else None
    except KeyConfigError as e:
        return [str(e)]
    return _problems(chain, key)


_SUPPORTED_KEYS = "use an ECDSA P-256/P-384/P-521, RSA (2048 bits or more) or Ed25519 key"
_EKU_NAMES = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    DOCUMENT_SIGNING: "documentSigning",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


def _problems(chain: list[x509.Certificate], key: PrivateKeyTypes | None) -> list[str]:
    """Checks measured against c2pa-rs 0.91 (see docs: c2pa.md §3)."""
    leaf, problems = chain[0], []
    now = dt.datetime.now(dt.UTC)
    if key is not None and not _same_key(key, leaf):
        if any(_same_key(key, c) for c in chain[1:]):
            problems.append(
                "the certificate for this key is not first; order the chain leaf first, then its issuers"
            )
            return problems
        problems.append(
            "the private key does not match the leaf (first) certificate; use the key issued with it"
        )
    if _alg_for(leaf.public_key()) is None:
        problems.append(f"the leaf certificate has {_key_kind(leaf.public_key())}; {_SUPPORTED_KEYS}")
    if leaf.not_valid_before_utc > now:
        problems.append(
            f"the leaf certificate is not valid until {leaf.not_valid_before_utc.isoformat()}; "
            "check the clock"
        )
    if leaf.not_valid_after_utc <= now:
        problems.append(f"the leaf certificate expired on {leaf.not_valid_after_utc.isoformat()}; renew it")
    if _self_signed(leaf):
        problems.append(
            "the leaf certificate is self-signed; C2PA needs one issued by a CA (or use development keys, "
            "`provgen keys init`)"
        )
    problems += _extension_problems(leaf)
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:], strict=False)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            problems.append(
                f"certificate {i + 2} in the chain did not issue certificate {i + 1}; "
                "order the chain leaf first, then each issuer"
            )
    for i, cert in enumerate(chain[1:], start=2):
        if cert.not_valid_after_utc <= now:
            problems.append(f"certificate {i} in the chain ({cert.subject.rfc4514_string()}) has expired")
    return problems


def _extension_problems(leaf: x509.Certificate) -> list[str]:
    problems = []
    bc = _ext(leaf, x509.BasicConstraints)
    if bc is not None and bc.ca:
        problems.append(
            "the leaf certificate is a CA (BasicConstraints CA:true); sign with an end-entity certificate"
        )
    ku = _ext(leaf, x509.KeyUsage)
    if ku is None:
        problems.append("the leaf certificate has no KeyUsage extension; it needs KeyUsage digitalSignature")
    else:
        if not ku.digital_signature:
            problems.append("the leaf certificate's KeyUsage lacks digitalSignature")
        if ku.key_cert_sign:
            problems.append(
                "the leaf certificate's KeyUsage has keyCertSign, which c2pa refuses for a signer"
            )
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is None:
        problems.append(
            "the leaf certificate has no ExtendedKeyUsage; it needs emailProtection (1.3.6.1.5.5.7.3.4), "
            "ideally with documentSigning (1.3.6.1.5.5.7.3.36)"
        )
    else:
        oids = list(eku)
        names = ", ".join(_EKU_NAMES.get(o, o.dotted_string) for o in oids)
        if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in oids:
            problems.append(
                "the leaf certificate's ExtendedKeyUsage has anyExtendedKeyUsage, which C2PA forbids"
            )
        if len(oids) > 1 and {ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.OCSP_SIGNING} & set(
            oids
        ):
            problems.append(
                "the leaf certificate combines timeStamping/OCSPSigning with other ExtendedKeyUsages"
            )
        if ExtendedKeyUsageOID.EMAIL_PROTECTION not in oids:
            problems.append(
                f"the leaf certificate's ExtendedKeyUsage ({names}) lacks emailProtection "
                "(1.3.6.1.5.5.7.3.4), which c2pa's default trust configuration requires"
            )
    if _ext(leaf, x509.AuthorityKeyIdentifier) is None:
        problems.append("the leaf certificate has no AuthorityKeyIdentifier extension; reissue it with one")
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        problems.append(f"the leaf certificate's RSA key has {key.key_size} bits; c2pa needs at least 2048")
    return problems


def describe_certificate(chain_pem: bytes) -> dict:
    """Facts about the leaf certificate of ``chain_pem``, for display (``provgen keys show``)."""
    chain = _load_chain(chain_pem)
    leaf = chain[0]
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    return {
        "subject": leaf.subject.rfc4514_string(),
        "issuer": leaf.issuer.rfc4514_string(),
        "serial": format(leaf.serial_number, "x"),
        "not_before": leaf.not_valid_before_utc.isoformat(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": leaf.fingerprint(hashes.SHA256()).hex(":").upper(),
        "alg": _alg_for(leaf.public_key()),
        "extended_key_usage": [_EKU_NAMES.get(o, o.dotted_string) for o in eku] if eku is not None else [],
        "chain_length": len(chain),
    }


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


def _load_chain(chain_pem: bytes, path: Path | None = None) -> list[x509.Certificate]:
    where = f"`{path}`" if path else "`chain_pem`"
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as e:
        raise KeyConfigError(
            f"{where} holds no readable PEM certificate ({e}); give the PEM chain, leaf first"
        ) from None
    return chain


def _load_key(data: bytes, password: bytes | None, path: Path | None = None) -> PrivateKeyTypes:
    where = f"private key `{path}`" if path else "`key_pem`"
    if b"-----BEGIN" not in data:
        raise KeyConfigError(f"{where} is not PEM; convert it, e.g. `openssl pkcs8 -topk8 -nocrypt -in KEY`")
    if b"PRIVATE KEY-----" not in data and b"CERTIFICATE-----" in data:
        raise KeyConfigError(f"{where} holds a certificate, not a private key; were the paths swapped?")
    try:
        return serialization.load_pem_private_key(data, password)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if password is None:
            raise KeyConfigError(f"{where} is encrypted; give its password") from None
        raise KeyConfigError(f"{where} is not encrypted; do not give a password") from None
    except UnsupportedAlgorithm:
        raise KeyConfigError(f"{where} uses an unsupported key type; {_SUPPORTED_KEYS}") from None
    except ValueError:
        hint = "check the password" if password is not None else "give a PEM private key"
        raise KeyConfigError(
            f"{where} could not be read (bad password or not a private key); {hint}"
        ) from None


def _pkcs8(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _alg_for(public_key: object) -> str | None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return "ps256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return None


def _key_kind(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"an unsupported elliptic curve ({public_key.curve.name})"
    return f"an unsupported key type ({type(public_key).__name__.lstrip('_')})"


def _same_key(private_key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return private_key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _warn_if_exposed(key_path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            log.warning(
                "private key file %s is readable by other users (mode %o); run `chmod 600` on it",
                key_path,
                mode,
            )
