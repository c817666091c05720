"""Signed checkpoints of the audit chain: "entry N had hash H at time T", signed with the C2PA signing key.

A checkpoint is stored in the registry and can be exported as a small JSON document; an auditor who keeps
that document can later prove the log was not rewritten since (``provgen registry verify --checkpoint
FILE``): rewriting any entry up to N, even with every later hash recomputed, changes entry N's hash.

Signatures are plain detached signatures with ``cryptography`` (ECDSA with SHA-256/384/512 over the payload
bytes, RSA-PSS, or Ed25519), named with their JOSE algorithm names.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from sqlalchemy import Connection, insert, select

from provgen.core.errors import KeyConfigError, RegistryError
from provgen.provenance.registry import audit
from provgen.provenance.registry.models import Checkpoint, new_id, utcnow

__all__ = ["CHECKPOINT_TYPE", "CheckpointRecord", "create", "load_all", "from_export", "to_export", "check_signature"]

CHECKPOINT_TYPE = "io.provgen.registry-checkpoint/1"
_JOSE = {"es256": "ES256", "es384": "ES384", "es512": "ES512", "ps256": "PS256", "ed25519": "EdDSA"}
_HASHES = {"ES256": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512, "PS256": hashes.SHA256}


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint as stored or exported (signature not yet checked)."""

    id: str
    seq: int
    head_hash: str
    created_at: str
    payload: str
    algorithm: str
    signature: bytes
    certificate_chain: str
    signer: str


def _sign(key_pem: bytes, algorithm: str, data: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if algorithm == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if algorithm.startswith("ES") and isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(_HASHES[algorithm]()))
    if algorithm == "PS256" and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    raise KeyConfigError(f"cannot sign a registry checkpoint with a {type(key).__name__} as {algorithm}")


def check_signature(record: CheckpointRecord) -> str | None:
    """``None`` when the signature over ``payload`` verifies with the chain's leaf certificate and the payload
    states the record's ``seq`` and ``head_hash``; otherwise what is wrong."""
    try:
        leaf = x509.load_pem_x509_certificates(record.certificate_chain.encode())[0]
    except ValueError as error:
        return f"unreadable certificate chain: {error}"
    public = leaf.public_key()
    data = record.payload.encode()
    try:
        if record.algorithm == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(record.signature, data)
        elif record.algorithm.startswith("ES") and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(record.signature, data, ec.ECDSA(_HASHES[record.algorithm]()))
        elif record.algorithm == "PS256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(record.signature, data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            return f"algorithm {record.algorithm} does not fit the certificate's {type(public).__name__}"
    except InvalidSignature:
        return "the signature does not verify (payload or signature changed)"
    try:
        payload = json.loads(record.payload)
    except ValueError:
        return "the signed payload is not JSON"
    if (
        payload.get("type") != CHECKPOINT_TYPE
        or payload.get("seq") != record.seq
        or payload.get("head_hash") != record.head_hash
    ):
        return "the stored seq/head hash differ from the signed payload"
    return None


def create(conn: Connection, *, chain_pem: bytes, key_pem: bytes, alg: str, registry_url: str) -> CheckpointRecord:
    """Sign the current head of the chain and store the checkpoint (call inside a write transaction)."""
    audit.lock_chain(conn)
    seq, head_hash = audit.head(conn)
    if seq == 0:
        raise RegistryError("the audit log is empty: nothing to checkpoint yet")
    algorithm = _JOSE.get(alg.lower())
    if algorithm is None:
        raise KeyConfigError(f"cannot sign registry checkpoints with algorithm {alg!r}")
    now = utcnow()
    payload = audit.canonical_json(
        {
            "type": CHECKPOINT_TYPE,
            "registry": registry_url,
            "seq": seq,
            "head_hash": head_hash,
            "created_at": now.isoformat(timespec="microseconds"),
        }
    )
    signature = _sign(key_pem, algorithm, payload)
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    record = CheckpointRecord(
        id=new_id(),
        seq=seq,
        head_hash=head_hash,
        created_at=now.isoformat(),
        payload=payload.decode(),
        algorithm=algorithm,
        signature=signature,
        certificate_chain=chain_pem.decode(),
        signer=leaf.subject.rfc4514_string()[:512],
    )
    conn.execute(
        insert(Checkpoint.__table__).values(
            id=record.id,
            created_at=now,
            seq=seq,
            head_hash=head_hash,
            payload=record.payload,
            algorithm=algorithm,
            signature=signature,
            certificate_chain=record.certificate_chain,
            signer=record.signer,
        )
    )
    return record


def load_all(conn: Connection) -> list[CheckpointRecord]:
    rows = conn.execute(select(Checkpoint.__table__).order_by(Checkpoint.seq, Checkpoint.created_at)).mappings()
    return [
        CheckpointRecord(
            id=r["id"],
            seq=int(r["seq"]),
            head_hash=r["head_hash"],
            created_at=r["created_at"].isoformat(),
            payload=r["payload"],
            algorithm=r["algorithm"],
            signature=bytes(r["signature"]),
            certificate_chain=r["certificate_chain"],
            signer=r["signer"],
        )
        for r in rows
    ]


def to_export(record: CheckpointRecord) -> dict[str, Any]:
    """The checkpoint as a self-contained JSON document (signature in base64)."""
    return {
        "type": CHECKPOINT_TYPE,
        "id": record.id,
        "seq": record.seq,
        "head_hash": record.head_hash,
        "created_at": record.created_at,
        "payload": record.payload,
        "algorithm": record.algorithm,
        "signature": base64.b64encode(record.signature).decode(),
        "certificate_chain": record.certificate_chain,
        "signer": record.signer,
    }


def from_export(data: Any, source: str) -> CheckpointRecord:
    """Parse an exported checkpoint document; :class:`RegistryError` naming ``source`` if it is not one."""
    try:
        if data.get("type") != CHECKPOINT_TYPE:
            raise ValueError(f"type is {data.get('type')!r}, not {CHECKPOINT_TYPE!r}")
        return CheckpointRecord(
            id=str(data["id"]),
            seq=int(data["seq"]),
            head_hash=str(data["head_hash"]),
            created_at=str(data["created_at"]),
            payload=str(data["payload"]),
            algorithm=str(data["algorithm"]),
            signature=base64.b64decode(data["signature"]),
            certificate_chain=str(data["certificate_chain"]),
            signer=str(data.get("signer", "")),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise RegistryError(f"{source} is not a provgen registry checkpoint: {error}") from None
