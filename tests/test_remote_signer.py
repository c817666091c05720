"""Signing with a key held by another process: provenance/remote_signing.py, ManifestSigner's callback signer, and
the example plugin examples/provgen-remote-signer (its server runs as a real subprocess). Real certificates, real
c2pa signing and reading, real SQLite; nothing mocked."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import c2pa
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from PIL import Image

from provgen.core import Engine
from provgen.core.config import load_settings
from provgen.core.errors import KeyConfigError, SigningError
from provgen.core.plugins import make_plugin_manager
from provgen.provenance import keys as keymod
from provgen.provenance.c2pa_io import ManifestSigner, build_manifest, read_credentials
from provgen.provenance.remote_signing import RemoteSigningIdentity

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "provgen-remote-signer" / "src"
KW = dict(width=64, height=64, num_inference_steps=2, seed=5)


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The example plugin module, imported from the source tree (not installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import provgen_remote_signer

    return provgen_remote_signer


@pytest.fixture
def key_set(tmp_path: Path) -> dict[str, Path]:
    """A CA + leaf (like the development set); the leaf's key goes to the server's folder only, mode 0600."""
    files = keymod._make_dev_set("Remote Corp")
    public, private = tmp_path / "public", tmp_path / "server"
    public.mkdir()
    private.mkdir(mode=0o700)
    (public / "ca.pem").write_bytes(files["ca.pem"])
    (public / "chain.pem").write_bytes(files["signer.pem"])
    key = private / "signer.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(files["signer.key"])
    return {"ca": public / "ca.pem", "chain": public / "chain.pem", "key": key}


def start_server(key: Path, sock: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "provgen_remote_signer.server", "--key", str(key), "--socket", str(sock)],
        env=env,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the signing server did not start: {process.communicate()[1].decode()}")
        time.sleep(0.02)
    return process


@pytest.fixture
def server(key_set: dict[str, Path], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sock = tmp_path / "signer.sock"  # tmp_path is short enough for AF_UNIX's ~107-byte limit
    process = start_server(key_set["key"], sock)
    yield process, sock
    if process.poll() is None:
        process.terminate()
        process.wait(10)


def assets(home: Path) -> int:
    db = home / "registry.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM assets").fetchone()[0]


def test_generate_through_the_remote_signer_then_it_goes_away(  # type: ignore[no-untyped-def]
    plugin, server, key_set: dict[str, Path], tmp_path: Path, provgen_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process, sock = server
    monkeypatch.setenv("PROVGEN_REMOTE_SIGNER_SOCKET", str(sock))
    monkeypatch.setenv("PROVGEN_REMOTE_SIGNER_CHAIN", str(key_set["chain"]))
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name="remote-signer")
    engine = Engine(plugin_manager=pm, progress=False)
    out = tmp_path / "out"

    result = engine.generate(prompt="a red circle", output_dir=out, **KW)
    [image] = result.images
    anchors = key_set["ca"].read_bytes()
    context = c2pa.Context.from_dict(
        {"trust": {"user_anchors": anchors.decode()}, "verify": {"remote_manifest_fetch": False}}
    )
    with c2pa.Reader("image/png", io.BytesIO(image.path.read_bytes()), None, context) as reader:
        store = json.loads(reader.json())
    assert store["validation_state"] == "Trusted", store.get("validation_status")
    manifest = store["manifests"][store["active_manifest"]]
    assert manifest["signature_info"]["common_name"] == "Remote Corp signer"
    assert manifest["signature_info"]["alg"].lower() == "es256"

    # what provgen got is the chain and a socket path: no key material, and the local signer was never asked
    identity = engine.provenance.signer.identity
    assert isinstance(identity, RemoteSigningIdentity) and not hasattr(identity, "key_pem")
    assert identity.sign.args == (str(sock),) and str(sock) in identity.source
    assert b"PRIVATE KEY" not in identity.chain_pem + identity.trust_anchors_pem
    assert not (provgen_home / "keys").exists()
    assert "PRIVATE KEY" not in repr(identity)

    process.terminate()
    process.wait(10)
    assert not sock.exists()  # the server removes its socket on SIGTERM
    with pytest.raises(SigningError) as failure:
        engine.generate(prompt="a blue square", output_dir=tmp_path / "out2", **KW)
    message = str(failure.value)
    assert f"remote signer `unix socket {sock}" in message and "is the server running?" in message
    assert not (tmp_path / "out2").exists() or list((tmp_path / "out2").iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == [image.path.name]
    assert assets(provgen_home) == 1  # only the first image was recorded


def test_a_new_engine_checks_the_remote_before_signing(  # type: ignore[no-untyped-def]
    plugin, key_set: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first contact (the key-match challenge, before the first signature) fails cleanly too, and a server
    holding another key is refused. The engine's own signer signs a small PNG here: no model is needed."""
    sock = tmp_path / "other.sock"
    monkeypatch.setenv("PROVGEN_REMOTE_SIGNER_SOCKET", str(sock))
    monkeypatch.setenv("PROVGEN_REMOTE_SIGNER_CHAIN", str(key_set["chain"]))
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name="remote-signer")
    signer = Engine(plugin_manager=pm, progress=False).provenance.signer
    with pytest.raises(SigningError, match=f"remote signer `unix socket {sock}.*does not exist; is the server running"):
        signer.sign(_png(), "image/png", _manifest())

    other = tmp_path / "other.key"
    fd = os.open(other, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keymod._pkcs8(ec.generate_private_key(ec.SECP256R1())))
    process = start_server(other, sock)
    try:
        with pytest.raises(KeyConfigError, match="signs with a key that does not match the leaf"):
            signer.sign(_png(), "image/png", _manifest())
    finally:
        process.terminate()
        process.wait(10)


def test_the_server_refuses_a_key_others_can_read(key_set: dict[str, Path], tmp_path: Path) -> None:
    key_set["key"].chmod(0o644)
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "provgen_remote_signer.server",
            "--key",
            str(key_set["key"]),
            "--socket",
            str(tmp_path / "s.sock"),
        ],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode != 0 and b"chmod 600" in done.stderr and not (tmp_path / "s.sock").exists()


def test_plugin_defers_when_not_configured_and_names_a_missing_variable(  # type: ignore[no-untyped-def]
    plugin, key_set: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    assert plugin.provide_signer(settings=settings) is None
    monkeypatch.setenv("PROVGEN_REMOTE_SIGNER_SOCKET", "/nowhere.sock")
    with pytest.raises(KeyConfigError, match="PROVGEN_REMOTE_SIGNER_CHAIN"):
        plugin.provide_signer(settings=settings)
    monkeypatch.setenv("PROVGEN_REMOTE_SIGNER_CHAIN", str(key_set["chain"]))
    assert isinstance(plugin.provide_signer(settings=settings), RemoteSigningIdentity)
    local = settings.replace(cert_path=key_set["chain"], key_path=key_set["key"])
    assert plugin.provide_signer(settings=local) is None  # an explicit --cert/--key wins


# ------------------------------------------------------------------ ManifestSigner with an in-process "remote"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "teal").save(buffer, "PNG")
    return buffer.getvalue()


def _manifest() -> dict:
    return build_manifest(
        title="t.png",
        software_version="0",
        recipe={"k": 1},
        soft_binding_alg="io.provgen.test",
        soft_binding_value="00",
    )


@pytest.mark.parametrize("form", ["der", "raw"])
def test_manifest_signer_with_a_callable_key_holder(form: str) -> None:
    """Both ECDSA forms c2pa accepts (DER and COSE r||s) sign and verify; a refusal names the source."""
    files = keymod._make_dev_set("Callable Corp")
    key = serialization.load_pem_private_key(files["signer.key"], None)
    calls: list[int] = []

    def sign(data: bytes) -> bytes:
        calls.append(len(data))
        if len(calls) > 2:
            raise PermissionError("quota exceeded")
        der = key.sign(data, ec.ECDSA(hashes.SHA256()))
        if form == "der":
            return der
        r, s = utils.decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    identity = RemoteSigningIdentity(chain_pem=files["signer.pem"], sign=sign, source="test HSM slot 1")
    assert identity.alg == "es256"  # derived from the leaf
    with ManifestSigner(identity) as signer:
        signed = signer.sign(_png(), "image/png", _manifest())
        report = read_credentials(signed.data, trust_anchors_pem=files["ca.pem"])
        assert report.state == "Trusted" and report.manifest["signature_info"]["common_name"] == "Callable Corp signer"
        assert len(calls) == 2  # the key-match challenge, then the manifest
        with pytest.raises(
            SigningError, match=r"remote signer `test HSM slot 1` failed: PermissionError: quota exceeded"
        ):
            signer.sign(_png(), "image/png", _manifest())


def test_a_remote_chain_is_checked_like_a_local_one() -> None:
    files = keymod._make_dev_set("Callable Corp")
    ca_only = files["ca.pem"]  # a CA certificate as the "leaf": c2pa would refuse it
    identity = RemoteSigningIdentity(chain_pem=ca_only, sign=lambda data: b"", source="bad chain")
    with pytest.raises(KeyConfigError, match=r"remote signer `bad chain` cannot sign C2PA manifests: .*self-signed"):
        ManifestSigner(identity).sign(_png(), "image/png", _manifest())
