"""A signing identity whose private key stays elsewhere (an HSM, a KMS, another process).

A ``provide_signer`` plugin returns a :class:`RemoteSigningIdentity` instead of a
:class:`~provgen.provenance.keys.SigningIdentity`: the certificate chain, plus a ``sign`` callable that asks
the key holder for a signature. :class:`~provgen.provenance.c2pa_io.ManifestSigner` hands that callable to
c2pa as a callback signer (``c2pa.Signer.from_callback``), so the key never enters the generating process.

Before the first signature :func:`check_remote_identity` checks the chain like a local one (KeyUsage, EKU,
AKI, dates, ...) and asks the remote to sign a random challenge, verified with the leaf's public key: a
remote holding another key fails up front, naming the identity, instead of with c2pa's "the signature does
not match".
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from provgen.core.errors import KeyConfigError, SigningError
from provgen.provenance.certificates import (
    SUPPORTED_KEYS,
    chain_problems,
    describe_key_kind,
    load_chain,
    signing_alg_for,
)

__all__ = ["RemoteSigningIdentity", "check_remote_identity", "verify_signature"]

_HASHES = {"es256": hashes.SHA256, "es384": hashes.SHA384, "es512": hashes.SHA512, "ps256": hashes.SHA256}
_CHALLENGE = b"provgen remote signer key check\x00"


@dataclass(frozen=True)
class RemoteSigningIdentity:
    """A signing identity without a private key: ``sign`` asks the key holder.

    ``sign(data) -> signature`` gets the bytes c2pa wants signed (a COSE ``Sig_structure``, a few KB) and
    returns the raw signature for ``alg``: ECDSA over SHA-256/384/512 for es256/es384/es512 (DER, or the
    fixed-size ``r || s`` COSE form: c2pa-rs 0.91 accepts both), RSASSA-PSS with SHA-256, MGF1-SHA-256 and a
    32-byte salt for ps256, plain Ed25519 for ed25519. It is called from any thread that signs, and in
    forked worker processes: open a connection per call, or guard a shared one. Raise an exception (its
    message is shown, so name what failed: "cannot reach the signer at ...") to refuse; provgen turns it
    into a :class:`~provgen.core.errors.SigningError` naming ``source``, and nothing is written.
    """

    #: PEM certificates, leaf first, then intermediates (root optional); the leaf holds the remote key's public half
    chain_pem: bytes
    #: ``sign(data: bytes) -> bytes``: the signature of ``data`` by the key of the leaf certificate
    sign: Callable[[bytes], bytes] = field(repr=False)
    #: where the key is, for messages ("HSM slot 3", "unix socket /run/signer.sock")
    source: str
    #: c2pa signing algorithm; derived from the leaf certificate's key when empty
    alg: str = ""
    #: PEM certificates verification should trust for this identity (usually b"": PROVGEN_TRUST_ANCHORS)
    trust_anchors_pem: bytes = b""

    def __post_init__(self) -> None:
        if not self.alg:
            try:
                leaf = load_chain(self.chain_pem)[0]
            except KeyConfigError as e:
                raise KeyConfigError(f"remote signer `{self.source}`: {e}") from None
            alg = signing_alg_for(leaf.public_key())
            if alg is None:
                raise KeyConfigError(
                    f"remote signer `{self.source}`: the leaf certificate has {describe_key_kind(leaf.public_key())}; "
                    f"{SUPPORTED_KEYS}"
                )
            object.__setattr__(self, "alg", alg)
        if not callable(self.sign):
            raise TypeError("RemoteSigningIdentity.sign must be a callable (bytes) -> bytes")

    def __repr__(self) -> str:
        try:
            subject = load_chain(self.chain_pem)[0].subject.rfc4514_string()
        except Exception:
            subject = "?"
        return f"RemoteSigningIdentity(alg={self.alg!r}, source={self.source!r}, subject={subject!r})"

    __str__ = __repr__


def check_remote_identity(identity: RemoteSigningIdentity) -> None:
    """Check the chain as for a local key, then that the remote signs with the leaf's key.

    :raises KeyConfigError: the chain would be refused by c2pa, ``alg`` does not fit the leaf, or the remote
        signs with another key.
    :raises SigningError: the remote could not be reached or refused (its exception is chained).
    """
    chain = load_chain(identity.chain_pem)
    problems = chain_problems(chain, None)
    expected = signing_alg_for(chain[0].public_key())
    if expected is not None and identity.alg.lower() != expected:
        problems.append(f"`alg` is {identity.alg!r} but the leaf certificate's key signs {expected!r}")
    if problems:
        raise KeyConfigError(f"remote signer `{identity.source}` cannot sign C2PA manifests: {'; '.join(problems)}")
    challenge = _CHALLENGE + secrets.token_bytes(32)
    try:
        signature = identity.sign(challenge)
    except Exception as e:
        raise SigningError(f"the remote signer `{identity.source}` failed: {_describe(e)}") from e
    if not verify_signature(chain[0].public_key(), identity.alg, challenge, signature):
        raise KeyConfigError(
            f"remote signer `{identity.source}` signs with a key that does not match the leaf (first) "
            f"certificate of its chain ({chain[0].subject.rfc4514_string()}); give the chain issued for that key"
        )


def verify_signature(public_key: object, alg: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (in a form c2pa accepts for ``alg``) is ``public_key``'s signature of ``data``."""
    alg = alg.lower()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and alg in ("es256", "es384", "es512"):
            size = (public_key.curve.key_size + 7) // 8
            if len(signature) == 2 * size:  # perhaps the COSE form r || s; otherwise DER, tried below
                der = utils.encode_dss_signature(
                    int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                )
                try:
                    public_key.verify(der, data, ec.ECDSA(_HASHES[alg]()))
                    return True
                except InvalidSignature:
                    pass
            public_key.verify(signature, data, ec.ECDSA(_HASHES[alg]()))
        elif isinstance(public_key, rsa.RSAPublicKey) and alg == "ps256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
            public_key.verify(signature, data, pss, hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey) and alg == "ed25519":
            public_key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
