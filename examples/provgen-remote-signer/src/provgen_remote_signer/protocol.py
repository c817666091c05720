"""The wire protocol between the plugin and the signing server: length-prefixed frames on a Unix socket.

It is written by hand with the standard library on purpose: this is an example of the ``provide_signer``
hook, and a real deployment replaces this module with its HSM's or KMS's client (PKCS#11, a cloud SDK,
an HTTPS API), so it should not pull in a dependency of its own.

One connection carries one exchange:

* request: ``u32 length`` (big-endian) + the bytes to sign;
* response: ``u32 length`` + ``status`` (1 byte: 0 = signed, 1 = refused) + the signature, or the reason
  for the refusal in UTF-8.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["MAX_REQUEST", "RemoteSignerError", "sign_via_socket", "read_frame", "write_frame"]

#: the most bytes one request may carry (c2pa-python's callback signer never asks for more than 1 MiB)
MAX_REQUEST = 1 << 20
OK, REFUSED = 0, 1
_LENGTH = struct.Struct(">I")


class RemoteSignerError(Exception):
    """The signing server could not be reached, refused, or answered something unreadable."""


def write_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def read_frame(sock: socket.socket, limit: int) -> bytes:
    """One frame's payload; raises ``RemoteSignerError`` when the peer closes early or sends more than ``limit``."""
    (length,) = _LENGTH.unpack(_read_exactly(sock, _LENGTH.size))
    if length > limit:
        raise RemoteSignerError(f"frame of {length} bytes is over the limit of {limit}")
    return _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 65536))
        if not chunk:
            raise RemoteSignerError(f"the connection closed after {size - left} of {size} bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def sign_via_socket(path: str, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Ask the server listening on the Unix socket ``path`` to sign ``data``; a new connection per call, so
    it is safe from any thread and after ``fork``."""
    where = f"the signing server at unix socket `{path}`"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            write_frame(sock, data)
            reply = read_frame(sock, MAX_REQUEST)
    except FileNotFoundError:
        raise RemoteSignerError(f"{where} does not exist; is the server running?") from None
    except ConnectionRefusedError:
        raise RemoteSignerError(f"{where} refused the connection; is the server running?") from None
    except TimeoutError:
        raise RemoteSignerError(f"{where} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise RemoteSignerError(f"cannot talk to {where}: {e.strerror or e}") from None
    except RemoteSignerError as e:
        raise RemoteSignerError(f"{where} answered badly: {e}") from None
    if not reply:
        raise RemoteSignerError(f"{where} sent an empty answer")
    if reply[0] != OK:
        raise RemoteSignerError(f"{where} refused: {reply[1:].decode('utf-8', 'replace')}")
    return reply[1:]
