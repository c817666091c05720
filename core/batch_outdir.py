"""The output folder of a batch: one batch writes to it at a time, and what a killed run left is swept first.

The provenance layer writes each file as ``.ASSET.*.part``, renames it into place inside the registry
transaction, then commits. A run killed in between leaves a ``.part`` file, or a renamed file whose record
never committed. Before a (re-)run starts, :func:`sweep` removes both kinds; a renamed file only when its
asset id is not in the registry *and* its own C2PA manifest names one of this batch's job keys, so files
from anything else in the folder are never touched.

Locking (``fcntl.flock`` on ``DIR/.provgen-batch.lock``, released by the kernel when a process dies, even by
SIGKILL): the driver takes it exclusively to sweep, then holds it shared, like every local worker process, for
the whole run. A second batch into the same folder, or a re-run while workers of a killed run are still
finishing their last job, cannot get the exclusive lock and is told so (it never sweeps a file that is being
written).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection
from pathlib import Path
from typing import IO, TYPE_CHECKING

from provgen.core.errors import ValidationError

if TYPE_CHECKING:
    from provgen.provenance.registry import Registry

__all__ = ["LOCK_NAME", "OutputLock", "sweep"]

LOCK_NAME = ".provgen-batch.lock"
_PART = re.compile(r"\.([0-9a-f]{32})\..*\.part")
_FINAL = re.compile(r"([0-9a-f]{32})\.(png|jpeg|webp)")
_IN_CHUNK = 500
#: seconds a new run waits for the lock (workers of a killed run finish their job, then exit)
LOCK_WAIT_S = 10.0


class OutputLock:
    """``flock`` on the batch lock file of ``folder``: :meth:`exclusive` (to sweep), then :meth:`shared`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._handle: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.folder / LOCK_NAME, "a+b")  # noqa: SIM115 (held for the run)
        return self._handle

    def exclusive(self, wait_s: float | None = None) -> None:
        """Take the lock alone, waiting up to ``wait_s`` for workers of a killed run to finish their job.

        :raises ValidationError: another batch (or its workers) still writes to the folder.
        """
        import fcntl

        handle = self._open()
        deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ValidationError(
                        "--out", f"another provgen batch (or a worker of one that was stopped) is writing to "
                        f"{str(self.folder)!r}; wait for it to finish or stop it, then run again") from None
                time.sleep(0.2)
            except OSError:  # a file system without flock (some network mounts): nothing to coordinate with
                return

    def shared(self) -> None:
        """Hold the lock with the run's other processes (blocks while someone sweeps)."""
        import fcntl

        try:
            fcntl.flock(self._open(), fcntl.LOCK_SH)
        except OSError:
            pass

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the flock
            self._handle = None


def sweep(folder: Path, registry: Registry, job_keys: Collection[str]) -> list[Path]:
    """Remove what killed runs left in ``folder`` (hold :meth:`OutputLock.exclusive`); returns the removed paths."""
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    finals: dict[str, Path] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            if _PART.fullmatch(entry.name):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
            elif match := _FINAL.fullmatch(entry.name):
                finals[match.group(1)] = Path(entry.path)
    if not finals:
        return removed
    from sqlalchemy import select

    from provgen.provenance.registry.models import Asset

    ids = list(finals)
    known: set[str] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        known.update(registry.read("checking the batch's files against the registry",
                                   lambda s, c=chunk: list(s.scalars(select(Asset.id).where(Asset.id.in_(c))))))
    keys = set(job_keys)
    for asset_id, path in finals.items():
        if asset_id not in known and _job_key_of(path) in keys:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _job_key_of(path: Path) -> str | None:
    """The batch job key recorded in the file's own C2PA manifest (``io.provgen.generation``), if any."""
    from provgen.provenance.c2pa_io import GENERATION_ASSERTION, read_credentials

    try:
        data = path.read_bytes()
    except OSError:
        return None
    recipe = read_credentials(data).assertion(GENERATION_ASSERTION) or {}
    key = recipe.get("job_key") if isinstance(recipe, dict) else None
    return key if isinstance(key, str) else None
