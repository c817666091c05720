"""A tiny signing server: holds a private key and signs what arrives on a Unix socket.

    python -m provgen_remote_signer.server --key signer.key --socket /run/provgen/signer.sock

It stands in for an HSM or a KMS: the key file is read by this process only (it must be mode 0600), and
the generating processes get signatures, never the key. The socket is created with mode 0600, so only
the same user can ask for signatures; put it in a folder of its own to share it with a group. Stop it
with Ctrl-C or SIGTERM (the socket file is removed).

Signatures: ECDSA (DER) with SHA-256/384/512 for P-256/P-384/P-521 keys, RSASSA-PSS (SHA-256, 32-byte
salt) for RSA keys, Ed25519, which is what c2pa's es256/es384/es512, ps256 and ed25519 expect.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import socketserver
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from provgen_remote_signer.protocol import MAX_REQUEST, OK, REFUSED, RemoteSignerError, read_frame, write_frame

_EC_HASHES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}


def load_signing_function(key_path: Path) -> Callable[[bytes], bytes]:
    """``sign(data) -> signature`` with the key in ``key_path`` (an unencrypted PEM private key, mode 0600)."""
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise SystemExit(
            f"provgen-remote-signer: the key file {key_path} is readable by other users (mode {mode:o}); "
            f"run `chmod 600 {key_path}`"
        )
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_HASHES:
        algorithm = ec.ECDSA(_EC_HASHES[key.curve.name]())
        return lambda data: key.sign(data, algorithm)
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        return lambda data: key.sign(data, pss, hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    raise SystemExit(f"provgen-remote-signer: {key_path} holds a key type c2pa cannot use ({type(key).__name__})")


def make_server(socket_path: Path, sign: Callable[[bytes], bytes]) -> socketserver.UnixStreamServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(30)
            try:
                data = read_frame(self.request, MAX_REQUEST)
            except (RemoteSignerError, OSError) as e:
                with contextlib.suppress(OSError):
                    write_frame(self.request, bytes([REFUSED]) + str(e).encode())
                return
            try:
                reply = bytes([OK]) + sign(data)
            except Exception as e:  # noqa: BLE001 - the client is told; the server keeps serving
                reply = bytes([REFUSED]) + f"{type(e).__name__}: {e}".encode()
            with contextlib.suppress(OSError):
                write_frame(self.request, reply)

    _remove_stale_socket(socket_path)
    old = os.umask(0o177)  # the socket file is created 0600: only this user may connect
    try:
        server = socketserver.ThreadingUnixStreamServer(str(socket_path), Handler)
    finally:
        os.umask(old)
    server.daemon_threads = True
    return server


def _remove_stale_socket(path: Path) -> None:
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise SystemExit(f"provgen-remote-signer: {path} exists and is not a socket; choose another --socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left behind by a server that is gone
            return
    raise SystemExit(f"provgen-remote-signer: a server already listens on {path}")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # leave serve_forever the way Ctrl-C does, through the cleanup below


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provgen_remote_signer.server", description=__doc__.split("\n")[0])
    parser.add_argument("--key", type=Path, required=True, help="PEM private key (unencrypted, mode 0600)")
    parser.add_argument("--socket", type=Path, required=True, help="path of the Unix socket to listen on")
    args = parser.parse_args(argv)
    sign = load_signing_function(args.key)
    server = make_server(args.socket, sign)
    signal.signal(signal.SIGTERM, _stop)
    print(f"provgen-remote-signer: listening on {args.socket}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            args.socket.unlink()


if __name__ == "__main__":
    main()
