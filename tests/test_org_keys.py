"""An organisation's identity: `provgen keys import` (PEM or PKCS#12), signing with it, expiry warnings, and a
timestamp authority that cannot be reached. Real certificates (cryptography), real c2pa signing, real SQLite."""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
from pathlib import Path

import c2pa
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from provgen.cli.main import cli
from provgen.provenance import keys as keymod

SIZE = ["--width", "64", "--height", "64", "--steps", "2"]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env or {})
    return result.exit_code, result.stdout, result.stderr


def org_files(folder: Path, *, days: int = 400, organization: str = "Example Corp") -> dict[str, Path]:
    """A CA + leaf made like the development set (same extensions), written as an organisation would get them."""
    files = keymod._make_dev_set(organization, dt.timedelta(days=days))
    folder.mkdir(parents=True)
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


def encrypted_key(path: Path, password: bytes) -> Path:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    target = path.with_suffix(".enc.key")
    target.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return target


def bundle(files: dict[str, Path], password: bytes) -> Path:
    key = serialization.load_pem_private_key(files["signer.key"].read_bytes(), None)
    leaf, ca = __import__("cryptography.x509", fromlist=["x"]).load_pem_x509_certificates(
        files["signer.pem"].read_bytes()
    )
    data = pkcs12.serialize_key_and_certificates(
        b"signer", key, leaf, [ca], serialization.BestAvailableEncryption(password)
    )
    target = files["signer.pem"].parent / "bundle.p12"
    target.write_bytes(data)
    return target


def signer_subject(path: Path) -> str:
    context = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False}})
    with c2pa.Reader("image/png", io.BytesIO(path.read_bytes()), None, context) as reader:
        store = json.loads(reader.json())
    return json.dumps(store["manifests"][store["active_manifest"]]["signature_info"])


def test_import_pem_with_an_encrypted_key_then_sign_with_it(tmp_path: Path, provgen_home: Path) -> None:
    files = org_files(tmp_path / "org")
    key = encrypted_key(files["signer.key"], b"s3cret")
    code, _, err = run("keys", "import", "--chain", str(files["signer.pem"]), "--key", str(key))
    assert code != 0 and "encrypted" in err and "Traceback" not in err  # no password, no TTY: a clear error
    assert not (provgen_home / "keys" / "org").exists()

    code, out, err = run("keys", "import", "--chain", str(files["signer.pem"]), "--key", str(key), "--json",
                         env={"PROVGEN_KEY_PASSWORD": "s3cret"})
    assert code == 0, err
    info = json.loads(out)
    assert "Example Corp signer" in info["subject"]
    org = provgen_home / "keys" / "org"
    assert (org / "signer.key").stat().st_mode & 0o777 == 0o600 and org.stat().st_mode & 0o777 == 0o700
    assert b"s3cret" not in (org / "signer.key").read_bytes() and "s3cret" not in out + err

    code, out, err = run("keys", "import", "--chain", str(files["signer.pem"]), "--key", str(files["signer.key"]))
    assert code != 0 and "--force" in err  # a second import is refused without --force

    code, out, err = run("generate", "a red circle", *SIZE, "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    [image] = json.loads(out)["images"]
    assert "Example Corp" in signer_subject(Path(image["path"]))
    assert not (provgen_home / "keys" / "signer.pem").exists()  # the development keys were not needed
    code, out, _ = run("verify", image["path"], "--json", env={"PROVGEN_TRUST_ANCHORS": str(files["ca.pem"])})
    [report] = json.loads(out)
    assert code == 0 and report["verdict"] == "verified" and report["c2pa"]["state"] == "Trusted"
    # without the organisation's root: the signature validates but is not trusted (Valid), still our record
    code, out, _ = run("verify", image["path"], "--json", "--no-record")
    [report] = json.loads(out)
    assert report["c2pa"]["state"] == "Valid" and "signingCredential.untrusted" in report["c2pa"]["codes"]
    assert code == 0 and report["verdict"] == "verified" and report["sha256_match"] is True
    code, out, _ = run("verify", image["path"], "--json", "--no-record", "--trust-anchors", str(files["ca.pem"]))
    assert code == 0 and json.loads(out)[0]["c2pa"]["state"] == "Trusted"
    code, _, err = run("verify", image["path"], "--trust-anchors", str(files["signer.key"]))
    assert code != 0 and "--trust-anchors" in err and "holds no PEM certificate" in err and "Traceback" not in err


def test_import_pkcs12_and_a_wrong_password(tmp_path: Path, provgen_home: Path) -> None:
    files = org_files(tmp_path / "org")
    p12 = bundle(files, b"pw-1234")
    code, _, err = run("keys", "import", "--pkcs12", str(p12), env={"PROVGEN_KEY_PASSWORD": "wrong"})
    assert code != 0 and "could not be opened" in err and "PROVGEN_KEY_PASSWORD" in err
    assert not (provgen_home / "keys" / "org").exists()
    code, out, err = run("keys", "import", "--pkcs12", str(p12), "--json", env={"PROVGEN_KEY_PASSWORD": "pw-1234"})
    assert code == 0, err
    code, out, _ = run("keys", "show", "--json")
    assert code == 0 and "Example Corp signer" in json.loads(out)["subject"]
    code, _, err = run("keys", "import", "--chain", str(files["signer.pem"]), "--pkcs12", str(p12))
    assert code != 0 and "either" in err


def test_a_certificate_close_to_expiry_warns(tmp_path: Path) -> None:
    files = org_files(tmp_path / "org", days=10)
    code, _, err = run("keys", "import", "--chain", str(files["signer.pem"]), "--key", str(files["signer.key"]))
    assert code == 0 and "expires in 9 day(s)" in err and "PROVGEN_TSA_URL" in err
    code, out, err = run("generate", "a blue square", *SIZE, "--out", str(tmp_path / "out"), "--json")
    assert code == 0 and "warning: the signing certificate" in err
    files = org_files(tmp_path / "org2", days=365)
    code, _, err = run("keys", "import", "--force", "--chain", str(files["signer.pem"]), "--key",
                       str(files["signer.key"]))
    assert code == 0 and "warning" not in err


def test_an_unreachable_timestamp_authority_fails_cleanly(tmp_path: Path, provgen_home: Path) -> None:
    out_dir = tmp_path / "out"
    code, _, err = run("generate", "a green triangle", *SIZE, "--out", str(out_dir),
                       env={"PROVGEN_TSA_URL": "http://127.0.0.1:9/tsa"})
    assert code != 0 and "Traceback" not in err
    assert "timestamp authority `http://127.0.0.1:9/tsa`" in err and "PROVGEN_TSA_URL" in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    db = provgen_home / "registry.db"
    if db.exists():
        with sqlite3.connect(db) as connection:
            assert connection.execute("SELECT count(*) FROM assets").fetchone()[0] == 0
    code, _, err = run("generate", "a green triangle", *SIZE, "--out", str(out_dir))
    assert code == 0, err  # without the TSA the same request signs


@pytest.mark.parametrize("days", [10, -1])
def test_expiry_warning_wording(tmp_path: Path, days: int) -> None:
    from provgen.provenance.keys import load_identity
    from provgen.provenance.org_keys import expiry_warning

    files = org_files(tmp_path / "org", days=400)
    identity = load_identity(files["signer.pem"], files["signer.key"])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400 - days)
    warning = expiry_warning(identity, now=later)
    expected = "has expired" if days < 0 else f"expires in {days - 1} day(s)"
    assert warning is not None and expected in warning
    assert expiry_warning(identity) is None
