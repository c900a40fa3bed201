"""The spool folder: each received instance written atomically, named by its SOP Instance UID."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

# (0008,0018) SOP Instance UID: digits and dots, at most 64 characters (PS3.5 §9.1). Checked before
# the UID becomes a file name, so a hostile UID cannot climb out of the spool folder.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SUFFIX = ".dcm"
# Owner read/write, group read: workers may run as another user of the same group. Scans hold
# patient data, so never world-readable.
FILE_MODE = 0o640
COPY_CHUNK = 1 << 20


def is_valid_uid(uid: str) -> bool:
    """True for a syntactically valid DICOM UID (digits separated by dots, at most 64 characters)."""
    return 0 < len(uid) <= 64 and _UID.match(uid) is not None


def spool_path(spool_dir: Path, sop_instance_uid: str) -> Path:
    """Where the instance ``sop_instance_uid`` lives in the spool (``<uid>.dcm``).

    Raises:
        ValueError: the UID is not a valid DICOM UID.
    """
    if not is_valid_uid(sop_instance_uid):
        raise ValueError(f"{sop_instance_uid[:80]!r} is not a valid SOP Instance UID (digits and dots, at most 64)")
    return Path(spool_dir) / f"{sop_instance_uid}{SUFFIX}"


def write_atomic(path: Path, data: bytes | Path) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never part.

    A temporary file in the same folder is written and fsynced, then renamed over ``path``
    (``os.replace``, atomic on POSIX), then the folder is fsynced so the rename survives a crash.
    ``data``: the bytes, or a file to copy (streamed, never held in memory). Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, fh, COPY_CHUNK)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def write_instance(spool_dir: Path, sop_instance_uid: str, data: bytes | Path) -> Path:
    """Store one encoded DICOM file (preamble, file meta, data set) as ``<spool>/<uid>.dcm``.

    The same instance sent twice replaces its own file: one file per instance.
    """
    return write_atomic(spool_path(spool_dir, sop_instance_uid), data)


def received_file(event: object) -> Path | None:
    """The temporary file a pynetdicom C-STORE event's data set was written to as it arrived (chunked
    receive: ``pynetdicom._config.STORE_RECV_CHUNKED_DATASET``), None when it is held in memory.

    The file (preamble, file meta, data set) is the handler's to move or delete.
    """
    try:
        return Path(event.dataset_path)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


def content_digest(data: bytes | Path) -> str:
    """The SHA-256 (hex) of bytes or of a file's content (read in chunks)."""
    digest = hashlib.sha256()
    if isinstance(data, Path):
        with open(data, "rb") as fh:
            for chunk in iter(lambda: fh.read(COPY_CHUNK), b""):
                digest.update(chunk)
    else:
        digest.update(data)
    return digest.hexdigest()


def variant_path(spool_dir: Path, sop_instance_uid: str, digest: str) -> Path:
    """Where a second, different copy of an instance goes while a job still reads the first (``<uid>.<sha>.dcm``)."""
    return spool_path(spool_dir, sop_instance_uid).with_name(f"{sop_instance_uid}.{digest[:16]}{SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)
