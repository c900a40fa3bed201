"""Named API tokens (``FETALHC_API_TOKENS_FILE``): one ``name sha256hex`` line per person; add, list, revoke, check.

Only the SHA-256 of each token is stored, never the token: ``fetalhc token add NAME`` draws 32 random bytes
(``secrets``), prints the token once and appends its hash. The file is created owner read/write only (0600)
and rewritten atomically on revoke. A presented token is hashed and compared with every stored hash in
constant time (``hmac.compare_digest``, no early exit), so the time taken says nothing about which names
exist. A reviewer is known by the name alone: that, and nothing else about a token, may reach a log.

Example file::

    # fetalhc API tokens: name sha256(token)
    alice 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

NAME_MAX = 64  # reviewers.reviewer and measurements.reviewed_by are String(64)
TOKEN_BYTES = 32
HEADER = "# fetalhc API tokens, one per line: name sha256(token) (fetalhc token add|list|revoke)\n"
_HEX = frozenset("0123456789abcdef")


class TokenFileError(ValueError):
    """A token file that cannot be used, or a name that cannot be a reviewer's (the message says which line)."""


def check_name(name: str) -> str:
    """``name`` when it can name a reviewer: 1-64 characters, none of them whitespace or control/format characters.

    Raises:
        TokenFileError: with what is wrong.
    """
    if not isinstance(name, str) or not name:
        raise TokenFileError("a reviewer's name cannot be empty")
    if len(name) > NAME_MAX:
        raise TokenFileError(f"a reviewer's name has at most {NAME_MAX} characters, this one {len(name)}")
    bad = [c for c in name if c.isspace() or unicodedata.category(c)[0] in ("C", "Z")]
    if bad:
        raise TokenFileError(f"a reviewer's name cannot hold whitespace or control characters ({ascii(bad[0])}); "
                             "use e.g. alice.smith or a.smith@ward3")
    return name


def token_hash(token: str) -> str:
    """The SHA-256 of a token, as lower-case hex (what the file stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NamedToken:
    """One line of the file: the reviewer's name and the SHA-256 of their token."""

    name: str
    sha256: str


def parse_tokens(text: str, source: str = "tokens file") -> list[NamedToken]:
    """The entries of a token file's text (blank lines and ``#`` comments skipped).

    Raises:
        TokenFileError: a malformed line, a bad name, a hash that is not 64 hex digits, a name twice.
    """
    entries: list[NamedToken] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2:
            raise TokenFileError(f"{source} line {number}: expected 'name sha256hex', found {len(parts)} fields")
        name, digest = parts
        try:
            check_name(name)
        except TokenFileError as exc:
            raise TokenFileError(f"{source} line {number}: {exc}") from None
        digest = digest.lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise TokenFileError(f"{source} line {number}: the hash of {name!r} is not 64 hex digits (SHA-256)")
        if name in seen:
            raise TokenFileError(f"{source} line {number}: {name!r} is listed twice")
        seen.add(name)
        entries.append(NamedToken(name, digest))
    return entries


def read_tokens(path: Path) -> list[NamedToken]:
    """The entries of the file at ``path`` (none when it does not exist yet)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return parse_tokens(text, str(path))


def add_token(path: Path, name: str) -> str:
    """Draw a new token for ``name``, append its hash to ``path`` (created 0600) and return the token.

    Raises:
        TokenFileError: a bad name, or one that already has a token (revoke it first).
    """
    check_name(name)
    path = Path(path)
    if any(entry.name == name for entry in read_tokens(path)):
        raise TokenFileError(f"{name!r} already has a token in {path}; revoke it first (fetalhc token revoke {name})")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        new = True
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        new = False
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        if new:
            os.fchmod(fh.fileno(), 0o600)  # whatever the umask
            fh.write(HEADER)
        elif path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            fh.write("\n")
        fh.write(f"{name} {token_hash(token)}\n")
    return token


def revoke_token(path: Path, name: str) -> bool:
    """Remove ``name``'s line from ``path`` (rewritten atomically, mode kept 0600); False when it had none."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    kept, removed = [], False
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) == 2 and not line.lstrip().startswith("#") and fields[0] == name:
            removed = True
            continue
        kept.append(line)
    if not removed:
        return False
    fd, tmp = tempfile.mkstemp(prefix=".tokens.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write("".join(kept))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class TokenBook:
    """The named tokens of a file, read again whenever the file changes (``token add``/``revoke`` take effect at
    once, without restarting the server). ``name_of(token)`` answers in constant time."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[NamedToken] = []

    @property
    def configured(self) -> bool:
        """True when ``FETALHC_API_TOKENS_FILE`` is set (then the API needs a token, as with FETALHC_API_TOKEN)."""
        return self.path is not None

    def entries(self) -> list[NamedToken]:
        """The current entries (re-read when the file's inode, size or mtime changed; none while it is missing)."""
        if self.path is None:
            return []
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._entries = read_tokens(self.path) if stamp is not None else []
                self._stamp = stamp
            return self._entries

    def name_of(self, token: str) -> str | None:
        """The name whose token this is, or None; every entry is compared (constant time in the token)."""
        digest = token_hash(token).encode()
        found: str | None = None
        for entry in self.entries():
            if hmac.compare_digest(digest, entry.sha256.encode()):
                found = entry.name
        return found
