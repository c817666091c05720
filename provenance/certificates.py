"""X.509 checks for C2PA signing certificates, and a readable description of a chain.

c2pa-rs refuses an unsuitable signing certificate with little more than "the certificate is invalid";
these checks name every requirement that is not met (KeyUsage, EKU, AKI, validity, key match, ...), so
provgen can say what to fix before it signs anything.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from provgen.core.errors import KeyConfigError

__all__ = [
    "DOCUMENT_SIGNING",
    "SUPPORTED_KEYS",
    "certificate_problems",
    "chain_problems",
    "describe_certificate",
    "describe_key_kind",
    "is_self_signed",
    "load_chain",
    "load_private_key",
    "same_key",
    "signing_alg_for",
]

#: id-kp-documentSigning (RFC 9336); c2pa-rs 0.91 only accepts it alone with a custom EKU trust config
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
SUPPORTED_KEYS = "use an ECDSA P-256/P-384/P-521, RSA (2048 bits or more) or Ed25519 key"
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


def certificate_problems(chain_pem: bytes, key_pem: bytes | None = None) -> list[str]:
    """Every reason c2pa-rs would refuse to sign with this chain (and key), as sentences; [] if none."""
    try:
        chain = load_chain(chain_pem)
        key = load_private_key(key_pem, None) if key_pem is not None else None
    except KeyConfigError as e:
        return [str(e)]
    return chain_problems(chain, key)


def chain_problems(chain: list[x509.Certificate], key: PrivateKeyTypes | None) -> list[str]:
    """Checks measured against c2pa-rs 0.91 (see docs: c2pa.md §3)."""
    leaf, problems = chain[0], []
    now = dt.datetime.now(dt.UTC)
    if key is not None and not same_key(key, leaf):
        if any(same_key(key, c) for c in chain[1:]):
            problems.append(
                "the certificate for this key is not first; order the chain leaf first, then its issuers"
            )
            return problems
        problems.append(
            "the private key does not match the leaf (first) certificate; use the key issued with it"
        )
    if signing_alg_for(leaf.public_key()) is None:
        problems.append(f"the leaf certificate has {describe_key_kind(leaf.public_key())}; {SUPPORTED_KEYS}")
    if leaf.not_valid_before_utc > now:
        problems.append(
            f"the leaf certificate is not valid until {leaf.not_valid_before_utc.isoformat()}; "
            "check the clock"
        )
    if leaf.not_valid_after_utc <= now:
        problems.append(f"the leaf certificate expired on {leaf.not_valid_after_utc.isoformat()}; renew it")
    if is_self_signed(leaf):
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
    chain = load_chain(chain_pem)
    leaf = chain[0]
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    return {
        "subject": leaf.subject.rfc4514_string(),
        "issuer": leaf.issuer.rfc4514_string(),
        "serial": format(leaf.serial_number, "x"),
        "not_before": leaf.not_valid_before_utc.isoformat(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": leaf.fingerprint(hashes.SHA256()).hex(":").upper(),
        "alg": signing_alg_for(leaf.public_key()),
        "extended_key_usage": [_EKU_NAMES.get(o, o.dotted_string) for o in eku] if eku is not None else [],
        "chain_length": len(chain),
    }


def load_chain(chain_pem: bytes, path: Path | None = None) -> list[x509.Certificate]:
    where = f"`{path}`" if path else "`chain_pem`"
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as e:
        raise KeyConfigError(
            f"{where} holds no readable PEM certificate ({e}); give the PEM chain, leaf first"
        ) from None
    return chain


def signing_alg_for(public_key: object) -> str | None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return "ps256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return None


def describe_key_kind(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"an unsupported elliptic curve ({public_key.curve.name})"
    return f"an unsupported key type ({type(public_key).__name__.lstrip('_')})"


def same_key(private_key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return private_key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def is_self_signed(cert: x509.Certificate) -> bool:
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


def load_private_key(data: bytes, password: bytes | None, path: Path | None = None) -> PrivateKeyTypes:
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
        raise KeyConfigError(f"{where} uses an unsupported key type; {SUPPORTED_KEYS}") from None
    except ValueError:
        hint = "check the password" if password is not None else "give a PEM private key"
        raise KeyConfigError(
            f"{where} could not be read (bad password or not a private key); {hint}"
        ) from None
