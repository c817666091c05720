"""provgen.provenance.keys: development keys and checks of an organisation's certificate."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from provgen.core.errors import KeyConfigError
from provgen.provenance.keys import (
    DevKeyPaths,
    SigningIdentity,
    certificate_problems,
    describe_certificate,
    ensure_dev_keys,
    init_dev_keys,
    load_dev_identity,
    load_identity,
)

EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION
DOC_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
NOW = dt.datetime.now(dt.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _ku(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
    )
    base = dict.fromkeys(names + ("key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    return x509.KeyUsage(**{**base, **bits})


@pytest.fixture(scope="module")
def ca():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Org Root"))
        .issuer_name(_name("Org Root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ku(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca, *, key=None, ku="default", eku=(EMAIL, DOC_SIGNING), aki=True, ca_flag=False, start=-1, days=365
):
    """A leaf issued by ``ca``; each keyword breaks one requirement."""
    ca_cert, ca_key = ca
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(_name("Org Signer"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=start))
        .not_valid_after(NOW + dt.timedelta(days=start + days))
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ku == "default":
        ku = _ku(digital_signature=True)
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if aki:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    return b.sign(ca_key, hashes.SHA256()), key


def write_org(tmp_path: Path, chain: bytes, key: bytes) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / "org.pem", tmp_path / "org.key"
    cert_path.write_bytes(chain)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return cert_path, key_path


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> DevKeyPaths:
    return init_dev_keys(tmp_path_factory.mktemp("home") / "keys")


# --- development keys --------------------------------------------------------------------------------


def test_dev_keys_files_and_modes(dev: DevKeyPaths) -> None:
    keys_dir = dev.ca_cert.parent
    assert mode(keys_dir) == 0o700
    assert mode(dev.ca_key) == 0o600 and mode(dev.signer_key) == 0o600
    assert {p.name for p in keys_dir.iterdir()} == {"ca.pem", "ca.key", "signer.pem", "signer.key", ".lock"}
    chain = x509.load_pem_x509_certificates(dev.signer_chain.read_bytes())
    root = x509.load_pem_x509_certificate(dev.ca_cert.read_bytes())
    assert len(chain) == 2 and chain[1] == root
    leaf = chain[0]
    leaf.verify_directly_issued_by(root)
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [EMAIL, DOC_SIGNING]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length is None
    assert (leaf.not_valid_after_utc - NOW).days >= 5 * 365 - 1
    assert (root.not_valid_after_utc - NOW).days >= 3649
    assert (
        isinstance(root.public_key(), ec.EllipticCurvePublicKey)
        and root.public_key().curve.name == "secp256r1"
    )
    assert certificate_problems(dev.signer_chain.read_bytes(), dev.signer_key.read_bytes()) == []


def test_init_refuses_to_overwrite_then_force_replaces(tmp_path: Path) -> None:
    paths = init_dev_keys(tmp_path / "keys")
    before = {p: p.read_bytes() for p in (paths.ca_cert, paths.ca_key, paths.signer_chain, paths.signer_key)}
    with pytest.raises(KeyConfigError, match=r"already holds development keys.*--force"):
        init_dev_keys(tmp_path / "keys")
    assert all(p.read_bytes() == data for p, data in before.items())
    init_dev_keys(tmp_path / "keys", force=True, organization="Acme")
    assert all(p.read_bytes() != data for p, data in before.items())
    assert mode(paths.signer_key) == 0o600 and mode(paths.ca_key) == 0o600
    assert "O=Acme" in describe_certificate(paths.signer_chain.read_bytes())["subject"]


def test_init_tightens_a_loose_keys_dir(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir(mode=0o755)
    os.chmod(tmp_path / "keys", 0o755)
    init_dev_keys(tmp_path / "keys")
    assert mode(tmp_path / "keys") == 0o700


def test_ensure_creates_on_first_use_only(tmp_path: Path) -> None:
    paths, created = ensure_dev_keys(tmp_path / "a" / "keys")
    assert created and paths.signer_key.exists()
    first = paths.signer_key.read_bytes()
    again, created = ensure_dev_keys(tmp_path / "a" / "keys")
    assert not created and again == paths and paths.signer_key.read_bytes() == first


def test_ensure_refuses_a_partial_set(tmp_path: Path) -> None:
    paths = init_dev_keys(tmp_path / "keys")
    paths.ca_key.unlink()
    with pytest.raises(KeyConfigError, match=r"incomplete \(missing ca.key\).*init --force"):
        ensure_dev_keys(tmp_path / "keys")


@pytest.mark.parametrize("committed", [True, False])
def test_interrupted_replacement_is_finished_or_rolled_back(tmp_path: Path, committed: bool) -> None:
    old = init_dev_keys(tmp_path / "old")
    new = init_dev_keys(tmp_path / "new")
    old_bytes = {p.name: p.read_bytes() for p in old.ca_cert.parent.glob("*.*")}
    # simulate a crash in the middle of the renames: two files already replaced, two still pending
    for i, name in enumerate(["ca.pem", "ca.key", "signer.pem", "signer.key"]):
        target = old.ca_cert.parent / (name if (committed and i < 2) else name + ".new")
        shutil.copyfile(new.ca_cert.parent / name, target)
    if committed:
        (old.ca_cert.parent / ".commit").touch()
    else:
        for name in ["ca.pem", "ca.key"]:
            (old.ca_cert.parent / (name + ".new")).unlink()
    _, created = ensure_dev_keys(old.ca_cert.parent)
    assert not created
    leftovers = [
        p.name for p in old.ca_cert.parent.iterdir() if p.name.endswith(".new") or p.name == ".commit"
    ]
    assert leftovers == []
    for p in (old.ca_cert, old.ca_key, old.signer_chain, old.signer_key):
        expected = (new.ca_cert.parent / p.name).read_bytes() if committed else old_bytes[p.name]
        assert p.read_bytes() == expected
    load_dev_identity(old.ca_cert.parent)  # a consistent set either way


def test_load_dev_identity(dev: DevKeyPaths) -> None:
    identity = load_dev_identity(dev.ca_cert.parent)
    assert identity.alg == "es256" and identity.source == "development"
    assert identity.trust_anchors_pem == dev.ca_cert.read_bytes()
    assert identity.chain_pem == dev.signer_chain.read_bytes()
    assert identity.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_load_dev_identity_detects_mismatched_files(tmp_path: Path) -> None:
    a, b = init_dev_keys(tmp_path / "a"), init_dev_keys(tmp_path / "b")
    shutil.copyfile(b.signer_key, a.signer_key)
    with pytest.raises(KeyConfigError, match=r"does not match.*init --force"):
        load_dev_identity(tmp_path / "a")


def test_repr_hides_private_key(dev: DevKeyPaths) -> None:
    identity = load_dev_identity(dev.ca_cert.parent)
    body = [line for line in identity.key_pem.decode().splitlines() if "-----" not in line]
    for text in (repr(identity), str(identity), f"{identity}", repr([identity])):
        assert "PRIVATE" not in text and "<hidden>" in text
        assert not any(line[:20] in text for line in body)
    assert "es256" in repr(identity)


def test_describe_certificate(dev: DevKeyPaths) -> None:
    info = describe_certificate(dev.signer_chain.read_bytes())
    leaf = x509.load_pem_x509_certificates(dev.signer_chain.read_bytes())[0]
    assert info["subject"] == "CN=provgen development signer,O=provgen development"
    assert info["issuer"] == "CN=provgen development root CA,O=provgen development"
    assert int(info["serial"], 16) == leaf.serial_number
    assert dt.datetime.fromisoformat(info["not_after"]) == leaf.not_valid_after_utc
    assert dt.datetime.fromisoformat(info["not_before"]).utcoffset() == dt.timedelta(0)
    assert info["sha256_fingerprint"].replace(":", "").lower() == leaf.fingerprint(hashes.SHA256()).hex()
    assert info["alg"] == "es256" and info["chain_length"] == 2
    with pytest.raises(KeyConfigError, match="no readable PEM certificate"):
        describe_certificate(b"nonsense")


# --- an organisation's certificate -------------------------------------------------------------------


def test_load_identity_with_dev_keys_as_organisation(dev: DevKeyPaths) -> None:
    identity = load_identity(dev.signer_chain, dev.signer_key)
    assert identity.alg == "es256" and identity.trust_anchors_pem == b""
    assert identity.source == str(dev.signer_chain)
    assert identity.chain_pem == dev.signer_chain.read_bytes()


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "es384"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "es512"),
        (lambda: rsa.generate_private_key(65537, 2048), "ps256"),
        (ed25519.Ed25519PrivateKey.generate, "ed25519"),
    ],
)
def test_alg_follows_the_key_type(tmp_path: Path, ca, make_key, alg: str) -> None:
    leaf, key = make_leaf(ca, key=make_key())
    identity = load_identity(*write_org(tmp_path, pem(leaf) + pem(ca[0]), key_pem(key)))
    assert identity.alg == alg


def test_load_identity_encrypted_key(tmp_path: Path, ca) -> None:
    leaf, key = make_leaf(ca)
    cert_path, key_path = write_org(tmp_path, pem(leaf), key_pem(key, b"s3cret"))
    identity = load_identity(cert_path, key_path, password=b"s3cret")
    assert b"ENCRYPTED" not in identity.key_pem and identity.key_pem.startswith(b"-----BEGIN PRIVATE KEY")
    with pytest.raises(KeyConfigError, match="is encrypted; give its password"):
        load_identity(cert_path, key_path)
    with pytest.raises(KeyConfigError, match="check the password"):
        load_identity(cert_path, key_path, password=b"wrong")


def test_load_identity_missing_and_unreadable_files(tmp_path: Path, dev: DevKeyPaths) -> None:
    with pytest.raises(KeyConfigError, match=r"certificate chain file `.*nope.pem` does not exist"):
        load_identity(tmp_path / "nope.pem", dev.signer_key)
    with pytest.raises(KeyConfigError, match=r"private key file `.*nope.key` does not exist"):
        load_identity(dev.signer_chain, tmp_path / "nope.key")
    with pytest.raises(KeyConfigError, match="is a directory"):
        load_identity(tmp_path, dev.signer_key)
    with pytest.raises(KeyConfigError, match="cannot read certificate chain file"):
        load_identity(dev.signer_key / "x.pem", dev.signer_key)  # a path through a file
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.pem"
        locked.write_bytes(dev.signer_chain.read_bytes())
        locked.chmod(0)
        with pytest.raises(KeyConfigError, match="cannot read certificate chain file"):
            load_identity(locked, dev.signer_key)


def test_load_identity_not_pem(tmp_path: Path, dev: DevKeyPaths, ca) -> None:
    der = x509.load_pem_x509_certificates(dev.signer_chain.read_bytes())[0].public_bytes(
        serialization.Encoding.DER
    )
    (tmp_path / "leaf.der").write_bytes(der)
    with pytest.raises(KeyConfigError, match=r"`.*leaf.der` is not PEM; convert it"):
        load_identity(tmp_path / "leaf.der", dev.signer_key)
    with pytest.raises(KeyConfigError, match="were the certificate and key swapped"):
        load_identity(dev.signer_key, dev.signer_chain)
    (tmp_path / "junk.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyConfigError, match=r"private key `.*junk.key` could not be read"):
        load_identity(dev.signer_chain, tmp_path / "junk.key")


def _self_signed_leaf():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Self"))
        .issuer_name(_name("Self"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(_ku(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([EMAIL]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


BAD_LEAVES = {
    "expired": (dict(start=-30, days=10), "expired on"),
    "not yet valid": (dict(start=2), "not valid until"),
    "no digitalSignature": (dict(ku=_ku(content_commitment=True)), "KeyUsage lacks digitalSignature"),
    "keyCertSign": (dict(ku=_ku(digital_signature=True, key_cert_sign=True)), "has keyCertSign"),
    "no KeyUsage": (dict(ku=None), "no KeyUsage extension"),
    "no EKU": (dict(eku=()), "no ExtendedKeyUsage"),
    "serverAuth only": (
        dict(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        r"\(serverAuth\) lacks emailProtection",
    ),
    "documentSigning only": (dict(eku=(DOC_SIGNING,)), "lacks emailProtection"),
    "anyExtendedKeyUsage": (
        dict(eku=(EMAIL, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)),
        "anyExtendedKeyUsage",
    ),
    "timeStamping combined": (dict(eku=(EMAIL, ExtendedKeyUsageOID.TIME_STAMPING)), "combines timeStamping"),
    "no AKI": (dict(aki=False), "no AuthorityKeyIdentifier"),
    "CA leaf": (dict(ca_flag=True), r"is a CA \(BasicConstraints CA:true\)"),
    "RSA 1024": (dict(key=rsa.generate_private_key(65537, 1024)), "1024 bits"),
}


@pytest.mark.parametrize("case", BAD_LEAVES)
def test_load_identity_rejects_bad_leaf(tmp_path: Path, ca, case: str) -> None:
    kwargs, message = BAD_LEAVES[case]
    leaf, key = make_leaf(ca, **kwargs)
    cert_path, key_path = write_org(tmp_path, pem(leaf) + pem(ca[0]), key_pem(key))
    with pytest.raises(KeyConfigError, match=message) as info:
        load_identity(cert_path, key_path)
    assert f"`{cert_path}` cannot sign C2PA manifests" in str(info.value)


def test_load_identity_rejects_self_signed_leaf(tmp_path: Path) -> None:
    cert, key = _self_signed_leaf()
    with pytest.raises(KeyConfigError, match="self-signed"):
        load_identity(*write_org(tmp_path, pem(cert), key_pem(key)))


def test_load_identity_rejects_key_mismatch_and_bad_order(tmp_path: Path, ca) -> None:
    leaf, key = make_leaf(ca)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyConfigError, match="private key does not match the leaf"):
        load_identity(*write_org(tmp_path, pem(leaf) + pem(ca[0]), key_pem(other)))
    with pytest.raises(KeyConfigError, match="not first; order the chain leaf first"):
        load_identity(*write_org(tmp_path, pem(ca[0]) + pem(leaf), key_pem(key)))
    unrelated, _ = _self_signed_leaf()
    with pytest.raises(KeyConfigError, match="certificate 2 in the chain did not issue certificate 1"):
        load_identity(*write_org(tmp_path, pem(leaf) + pem(unrelated), key_pem(key)))


def test_load_identity_rejects_unsupported_key_type(tmp_path: Path, ca) -> None:
    leaf, key = make_leaf(ca, key=ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(KeyConfigError, match=r"unsupported elliptic curve \(secp256k1\)"):
        load_identity(*write_org(tmp_path, pem(leaf), key_pem(key)))


def test_load_identity_lists_every_problem(tmp_path: Path, ca) -> None:
    leaf, key = make_leaf(ca, eku=(), aki=False)
    with pytest.raises(KeyConfigError, match="no ExtendedKeyUsage.*no AuthorityKeyIdentifier"):
        load_identity(*write_org(tmp_path, pem(leaf), key_pem(key)))


def test_signing_identity_is_frozen(dev: DevKeyPaths) -> None:
    identity = load_dev_identity(dev.ca_cert.parent)
    with pytest.raises(AttributeError):
        identity.alg = "es384"  # type: ignore[misc]
    assert isinstance(identity, SigningIdentity)
