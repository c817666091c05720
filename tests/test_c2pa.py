"""provgen.provenance.c2pa_io: signing and reading Content Credentials with the real c2pa library."""

from __future__ import annotations

import datetime as dt
import io
import multiprocessing
import struct
import threading
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from provgen.core.errors import InputImageError, KeyConfigError, SigningError, ValidationError
from provgen.provenance.c2pa_io import (
    TRAINED_ALGORITHMIC_MEDIA,
    CredentialReport,
    Ingredient,
    ManifestSigner,
    build_manifest,
    mime_for_format,
    read_credentials,
)
from provgen.provenance.keys import SigningIdentity, init_dev_keys, load_dev_identity, load_identity

RECIPE = {
    "model_id": "tiny/sd@abc123",
    "prompt_sha256": "9f" * 32,
    "seed": 1234,
    "steps": 20,
    "guidance": 7.5,
    "scheduler": {"name": "DDIM", "eta": 0.0},
    "loras": [],
    "note": None,
    # numeric arrays: c2pa-rs 0.91's json() renders these as truncated base64 (contentauth/c2pa-rs#2570)
    "size": [512, 768],
    "weights": [0.5, 1.0, -2.25],
    "ids": [1, 2, 3],
    "nested": {"offsets": [-1, 0, 300], "matrix": [[1, 2], [3, 4]]},
    "big": 2**63 - 1,
    "text": "ünïcödé ✓",
}
FORMATS = [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def manifest(**changes) -> dict:
    args = dict(
        title="generated image",
        software_version="0.1.0",
        recipe=RECIPE,
        soft_binding_alg="io.provgen.watermark.grid.v1",
        soft_binding_value="AAECAwQFBgc=",
    )
    return build_manifest(**{**args, **changes})


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("home") / "keys"
    init_dev_keys(path)
    return path


@pytest.fixture(scope="module")
def identity(keys_dir: Path) -> SigningIdentity:
    return load_dev_identity(keys_dir)


@pytest.fixture(scope="module")
def signer(identity: SigningIdentity):
    with ManifestSigner(identity) as s:
        yield s


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.effect_mandelbrot((96, 96), (-2, -1.25, 0.5, 1.25), 64).convert("RGB")


@pytest.fixture(scope="module")
def signed_png(signer: ManifestSigner, image: Image.Image) -> bytes:
    return signer.sign(encode(image, "PNG"), "image/png", manifest()).data


# --- round trip --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mime"), FORMATS)
def test_sign_and_read_back(signer, identity, image, fmt: str, mime: str) -> None:
    raw = encode(image, fmt)
    signed = signer.sign(raw, mime, manifest())
    assert signed.data != raw and signed.manifest_store[4:8] == b"jumb"
    assert signed.label.startswith("urn:c2pa:")
    assert Image.open(io.BytesIO(signed.data)).format == fmt

    report = read_credentials(signed.data, mime, trust_anchors_pem=identity.trust_anchors_pem)
    assert (report.state, report.codes, report.error) == ("Trusted", (), None)
    assert report.label == signed.label
    assert report.assertion("io.provgen.generation") == RECIPE
    assert report.assertion("c2pa.soft-binding") == {
        "alg": "io.provgen.watermark.grid.v1",
        "blocks": [{"scope": {}, "value": "AAECAwQFBgc="}],
    }
    assert "thumbnail" not in report.manifest

    untrusted = read_credentials(signed.data, mime)
    assert untrusted.state == "Valid" and "signingCredential.untrusted" in untrusted.codes
    assert (
        read_credentials(signed.data, None, trust_anchors_pem=identity.trust_anchors_pem).state == "Trusted"
    )


def test_actions_and_claim_generator(identity, signed_png: bytes) -> None:
    report = read_credentials(signed_png, "image/png", trust_anchors_pem=identity.trust_anchors_pem)
    labels = [a["label"] for a in report.manifest["assertions"]]
    assert labels == ["c2pa.actions.v2", "c2pa.soft-binding", "io.provgen.generation"]
    actions = report.assertion("c2pa.actions.v2")["actions"]
    assert report.assertion("c2pa.actions") == report.assertion("c2pa.actions.v2")
    created, watermarked = actions
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"] == {"name": "provgen", "version": "0.1.0"}
    assert watermarked == {
        "action": "c2pa.watermarked",
        "softwareAgent": {"name": "provgen", "version": "0.1.0"},
    }
    generator = report.manifest["claim_generator_info"][0]
    assert (generator["name"], generator["version"]) == ("provgen", "0.1.0")  # c2pa adds its own version
    assert report.manifest["title"] == "generated image"
    assert report.assertion("c2pa.nothing") is None


def test_extra_assertions_follow_in_order(signer, identity, image) -> None:
    extras = [{"label": "com.example.a", "data": {"x": 1}}, {"label": "com.example.b", "data": {"y": [1, 2]}}]
    signed = signer.sign(encode(image, "PNG"), "png", manifest(extra_assertions=extras))
    report = read_credentials(signed.data, trust_anchors_pem=identity.trust_anchors_pem)
    assert report.state == "Trusted"
    assert [a["label"] for a in report.manifest["assertions"]][-2:] == ["com.example.a", "com.example.b"]
    assert report.assertion("com.example.b") == {"y": [1, 2]}


def test_ingredient_from_bytes(signer, identity, image) -> None:
    depth = encode(image.convert("L").resize((32, 32)), "PNG")
    signed = signer.sign(
        encode(image, "JPEG"),
        "image/jpeg",
        manifest(ingredient_labels=["cond0"]),
        [Ingredient("depth map", "image/png", depth, label="cond0")],
    )
    report = read_credentials(signed.data, "image/jpeg", trust_anchors_pem=identity.trust_anchors_pem)
    assert report.state == "Trusted", report.codes
    assert [(i["title"], i["relationship"]) for i in report.ingredients] == [("depth map", "inputTo")]
    created = report.assertion("c2pa.actions")["actions"][0]
    assert len(created["parameters"]["ingredients"]) == 1  # the label became a hashed reference


def test_anchors_from_configuration(keys_dir: Path) -> None:
    org = load_identity(keys_dir / "signer.pem", keys_dir / "signer.key")
    anchors = (keys_dir / "ca.pem").read_bytes()
    with ManifestSigner(org, trust_anchors_pem=anchors) as s:
        signed = s.sign(encode(Image.new("RGB", (32, 32), "teal"), "PNG"), "image/png", manifest())
    assert read_credentials(signed.data, trust_anchors_pem=anchors).state == "Trusted"
    # the development root given twice (identity + configuration) and another root beside it
    other = init_dev_keys(keys_dir.parent / "other").ca_cert.read_bytes()
    dev = load_dev_identity(keys_dir)
    with ManifestSigner(dev, trust_anchors_pem=anchors + other) as s:
        signed = s.sign(encode(Image.new("RGB", (32, 32), "teal"), "PNG"), "image/png", manifest())
    assert read_credentials(signed.data, trust_anchors_pem=other + b"\n" + anchors).state == "Trusted"
    assert read_credentials(signed.data, trust_anchors_pem=other).state == "Valid"


def test_concurrent_signing(signer, identity, image) -> None:
    raw, results, errors = encode(image, "PNG"), [], []

    def work() -> None:
        try:
            for _ in range(4):
                out = signer.sign(raw, "image/png", manifest())
                results.append(read_credentials(out.data, trust_anchors_pem=identity.trust_anchors_pem).state)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == ["Trusted"] * 16


def test_signer_survives_fork(signer, identity, image, signed_png) -> None:
    raw = encode(image, "PNG")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:  # runs in the forked process; the parent's native handles are unusable there
        try:
            out = signer.sign(raw, "image/png", manifest())
            report = read_credentials(out.data, trust_anchors_pem=identity.trust_anchors_pem)
            queue.put((report.state, report.codes, out.label))
        except Exception as e:
            queue.put(("error", repr(e), None))

    process = ctx.Process(target=child)
    process.start()
    state, codes, label = queue.get(timeout=60)
    process.join(60)
    assert (state, codes) == ("Trusted", ()) and label.startswith("urn:c2pa:")
    assert process.exitcode == 0
    assert (
        read_credentials(signer.sign(raw, "png", manifest()).data).state == "Valid"
    )  # the parent still signs


# --- tampering and files without credentials ---------------------------------------------------------------


def png_chunks(data: bytes):
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        yield pos, data[pos + 4 : pos + 8], length
        pos += 12 + length


@pytest.mark.parametrize("fix_crc", [False, True])
def test_changed_pixel_data_is_invalid(identity, signed_png: bytes, fix_crc: bool) -> None:
    pos, _, length = next(c for c in png_chunks(signed_png) if c[1] == b"IDAT")
    data = bytearray(signed_png)
    data[pos + 8 + length // 2] ^= 0x01
    if fix_crc:
        struct.pack_into(">I", data, pos + 8 + length, zlib.crc32(bytes(data[pos + 4 : pos + 8 + length])))
    report = read_credentials(bytes(data), "image/png", trust_anchors_pem=identity.trust_anchors_pem)
    assert report.state == "Invalid"
    assert "assertion.dataHash.mismatch" in report.codes


def test_changed_recipe_is_invalid(identity, signed_png: bytes) -> None:
    needle = RECIPE["model_id"].encode()
    assert signed_png.count(needle) == 1
    tampered = signed_png.replace(needle, b"tiny/sd@abc124")
    report = read_credentials(tampered, "image/png", trust_anchors_pem=identity.trust_anchors_pem)
    assert report.state == "Invalid" and "assertion.hashedURI.mismatch" in report.codes


@pytest.mark.parametrize(("fmt", "mime"), FORMATS[:2])
def test_resaved_with_pillow_is_missing(signer, image, fmt: str, mime: str) -> None:
    signed = signer.sign(encode(image, fmt), mime, manifest()).data
    resaved = encode(Image.open(io.BytesIO(signed)), fmt)
    assert read_credentials(resaved, mime) == CredentialReport("Missing", (), None, None)


def test_unsigned_image_is_missing(image) -> None:
    assert read_credentials(encode(image, "PNG"), "image/png").state == "Missing"


def test_corrupt_manifest_is_invalid_with_error(identity, signed_png: bytes) -> None:
    i = signed_png.find(b"jumdc2pa")
    broken = signed_png[: i + 4] + b"X" + signed_png[i + 5 :]
    report = read_credentials(broken, "image/png", trust_anchors_pem=identity.trust_anchors_pem)
    assert report.state == "Invalid" and report.codes == ("manifest.unreadable",)
    assert report.error and report.label is None and report.manifest is None


def test_truncated_signed_file_is_invalid(identity, signed_png: bytes) -> None:
    report = read_credentials(signed_png[: len(signed_png) // 2], "image/png")
    assert report.state == "Invalid" and report.codes


def test_corrupt_image_without_credentials_is_missing() -> None:
    corrupt = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10
    assert read_credentials(corrupt, "image/png") == CredentialReport("Missing", (), None, None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage" * 20,
        b"\x89PNG\r\n\x1a\n" + b"\0" * 50,
        b"\xff\xd8\xff" + b"\0" * 50,
        b"RIFF\0\0\0\0WEBP",
    ],
)
@pytest.mark.parametrize("mime", [None, "image/png", "image/jpeg"])
def test_garbage_never_raises(data: bytes, mime: str | None) -> None:
    report = read_credentials(data, mime)
    assert report.state in ("Missing", "Invalid") and report.manifest is None


# --- errors ------------------------------------------------------------------------------------------------


def test_wrong_mime_is_an_input_error(signer, image) -> None:
    with pytest.raises(InputImageError, match=r"`image` is not a image/jpeg file.*`mime`"):
        signer.sign(encode(image, "PNG"), "image/jpeg", manifest())


def test_unparseable_image_is_an_input_error(signer) -> None:
    with pytest.raises(InputImageError, match="could not be parsed"):
        signer.sign(b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png", manifest())


def test_bad_ingredient_is_an_input_error(signer, image) -> None:
    with pytest.raises(InputImageError, match="ingredient `depth` could not be read as image/png"):
        signer.sign(
            encode(image, "PNG"), "image/png", manifest(), [Ingredient("depth", "image/png", b"junk")]
        )


def test_dangling_ingredient_label_is_rejected(signer, image) -> None:
    with pytest.raises(SigningError, match="manifest was rejected.*ingredientId not found: cond9"):
        signer.sign(encode(image, "PNG"), "image/png", manifest(ingredient_labels=["cond9"]))


def _leaf_without_aki(ca_key_pem: bytes, ca_pem: bytes) -> tuple[bytes, bytes]:
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    ca = x509.load_pem_x509_certificate(ca_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no aki")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return leaf.public_bytes(serialization.Encoding.PEM) + ca_pem, key_pem


def test_bad_certificate_says_which_requirement(keys_dir: Path, image) -> None:
    chain, key = _leaf_without_aki((keys_dir / "ca.key").read_bytes(), (keys_dir / "ca.pem").read_bytes())
    bad = SigningIdentity(chain, key, "es256", b"", "bad.pem")
    with ManifestSigner(bad) as s, pytest.raises(SigningError, match="`bad.pem`.*no AuthorityKeyIdentifier"):
        s.sign(encode(image, "PNG"), "image/png", manifest())


def test_closed_signer_refuses(identity, image) -> None:
    s = ManifestSigner(identity)
    s.sign(encode(image, "PNG"), "image/png", manifest())
    s.close()
    with pytest.raises(SigningError, match="closed"):
        s.sign(encode(image, "PNG"), "image/png", manifest())


def test_unusable_trust_anchors(identity) -> None:
    with pytest.raises(KeyConfigError, match="trust anchors"):
        read_credentials(b"", trust_anchors_pem=b"not a certificate")


def test_manifest_arguments_are_checked() -> None:
    with pytest.raises(ValidationError, match="`recipe`"):
        manifest(recipe={"seed": object()})
    with pytest.raises(ValidationError, match=r"`extra_assertions\[0\]`.*reserved"):
        manifest(extra_assertions=[{"label": "c2pa.actions", "data": {}}])
    with pytest.raises(ValidationError, match=r"`extra_assertions\[1\]`"):
        manifest(extra_assertions=[{"label": "a.b", "data": 1}, {"data": 2}])
    with pytest.raises(ValidationError, match="`relationship`"):
        Ingredient("x", "image/png", b"", relationship="childOf")


def test_mime_for_format() -> None:
    assert mime_for_format("png") == "image/png"
    assert mime_for_format("JPG") == mime_for_format("jpeg") == "image/jpeg"
    assert mime_for_format("webp") == "image/webp"
    with pytest.raises(ValueError, match="`gif`"):
        mime_for_format("gif")
