"""The ``$PPZ_HOME`` state directory of spec/home.md: paths, atomic writes, and the readers and
writers of every state file (credentials, session maps, pid, lock, cursors).

Only the standard library is imported here: the thin CLI uses this module without a daemon
(``ppz logout``, ``ppz daemon start/stop``) and must start fast.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ppz import cursors, ipc
from ppz.cursors import CursorEntry

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
PID_MODE = 0o644


# ---------------------------------------------------------------------------- paths


def resolve_home() -> Path:
    """``$PPZ_HOME``, else ``~/.ppz``, else ``.ppz`` in the working directory when there is no
    home directory: :func:`ppz.ipc.home_dir`, the one resolution the CLI uses too."""
    return Path(ipc.home_dir())


def resolve_socket(home: Path) -> Path:
    """``$PPZ_IPC_SOCKET`` (when non-empty), else ``<home>/daemon.sock`` (:func:`ppz.ipc.socket_path`)."""
    return Path(ipc.socket_path(home=str(home)))


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or tighten an existing one whose group or other bits
    are set. The parent must exist."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
        if st.st_mode & 0o077:
            os.chmod(path, DIR_MODE)
    else:
        os.chmod(path, DIR_MODE)  # mkdir's mode was filtered by the umask


class _InHome:
    """A file of the home layout (home.md §1), declared by its name in the home."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, home: Home, owner: type | None = None) -> Path:
        return home.root / self.name


@dataclass(frozen=True, slots=True)
class Home:
    """One ``$PPZ_HOME`` and the IPC socket that goes with it."""

    root: Path
    socket: Path

    # The layout of home.md §1.
    lock = _InHome("daemon.lock")
    pid = _InHome("daemon.pid")
    log = _InHome("daemon.log")
    credentials = _InHome("credentials")
    current_json = _InHome("current.json")
    legacy_current = _InHome("current")
    namespace_json = _InHome("namespace.json")
    cursors_dir = _InHome("cursors")
    events = _InHome("nats-events.jsonl")
    lifecycle = _InHome("diagnostics-lifecycle.jsonl")

    @classmethod
    def from_env(cls) -> Home:
        root = resolve_home()
        return cls(root, resolve_socket(root))

    @classmethod
    def at(cls, root: Path) -> Home:
        """A home at ``root`` with the default socket path (ignores the environment)."""
        return cls(root, root / "daemon.sock")

    def ensure_dir(self) -> None:
        """Create the home (and missing parents) with mode 0700, or tighten a wider one."""
        if self.root.parent != self.root:
            os.makedirs(self.root.parent, exist_ok=True)
        _ensure_private_dir(self.root)


# ---------------------------------------------------------------------------- atomic writes


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE, unique: bool = False,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never a
    partial one (home.md §3).

    The temporary file ``<name>.tmp`` (``<name>.tmp-<random>`` when ``unique``, for concurrent
    writers) is created in the same directory with ``mode``, fully written, fsynced (unless
    ``durable`` is false) and renamed over the target. On any failure the temporary file is
    removed and the error re-raised. Without the fsync the rename is still atomic for every
    reader and across a crash of the process; only a power loss can lose the newest content.
    """
    suffix = ".tmp-" + os.urandom(6).hex() if unique else ".tmp"
    tmp = path.with_name(path.name + suffix)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(tmp, flags | (os.O_EXCL if unique else 0), mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask, or a leftover temp file, may have another mode
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _encode(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


# ---------------------------------------------------------------------------- reading


class StateFileError(Exception):
    """A state file exists but cannot be read or does not have the required form."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _read_state_bytes(path: Path) -> bytes | None:
    """The file's bytes; ``None`` if it does not exist. Any other failure is a StateFileError."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateFileError(path, _reason(err)) from err


def _parse_json(data: bytes) -> Any:
    """Parsed JSON; ValueError for anything that is not (also bad UTF-8 and absurd nesting)."""
    try:
        return json.loads(data)
    except RecursionError as err:
        raise ValueError("nested too deeply") from err


def _parse_json_object(path: Path, data: bytes) -> dict[str, Any]:
    try:
        obj = _parse_json(data)
    except ValueError as err:
        raise StateFileError(path, f"invalid JSON: {err}") from err
    if not isinstance(obj, dict):
        raise StateFileError(path, "not a JSON object")
    return obj


# ---------------------------------------------------------------------------- credentials

_REQUIRED_CREDENTIALS = ("url", "api_key")
_OPTIONAL_CREDENTIALS = ("account_id", "account_name", "nats_user_jwt", "nats_user_seed")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The stored credential (home.md §2.1). Secrets are kept out of ``repr``."""

    url: str
    api_key: str = field(repr=False)
    account_id: str = ""
    account_name: str = ""
    nats_user_jwt: str = field(default="", repr=False)
    nats_user_seed: str = field(default="", repr=False)

    @property
    def key_prefix(self) -> str:
        """The API key without a leading ``ppz_``, first 8 characters (shorter keys as is)."""
        return self.api_key.removeprefix("ppz_")[:8]

    def to_json(self) -> dict[str, str]:
        """The file's object: required fields, then the optional ones that are not empty."""
        obj = {"url": self.url, "api_key": self.api_key}
        for name in _OPTIONAL_CREDENTIALS:
            value = getattr(self, name)
            if value:
                obj[name] = value
        return obj

    @classmethod
    def from_json(cls, obj: object) -> Credentials:
        """Decode the file's object; unknown fields are dropped, a ``null`` optional field
        reads as empty. ValueError when ``url``/``api_key`` are missing, empty or not
        strings, or an optional field is neither a string nor null."""
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        values: dict[str, str] = {}
        for name in _REQUIRED_CREDENTIALS:
            value = obj.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"missing or empty {name!r}")
            values[name] = value
        for name in _OPTIONAL_CREDENTIALS:
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name!r} is not a string")
            values[name] = value or ""
        return cls(**values)

    def with_nats(
        self, jwt: str, seed: str, account_id: str | None = None, account_name: str | None = None
    ) -> Credentials:
        """A copy holding a new NATS user jwt/seed (and the account, when given)."""
        return replace(
            self,
            nats_user_jwt=jwt,
            nats_user_seed=seed,
            account_id=self.account_id if account_id is None else account_id,
            account_name=self.account_name if account_name is None else account_name,
        )


def read_credentials(path: Path) -> Credentials | None:
    """The stored credential, or ``None`` when logged out (file absent, empty or whitespace
    only). Unreadable or corrupt → StateFileError."""
    data = _read_state_bytes(path)
    if data is None or not data.strip():
        return None
    obj = _parse_json_object(path, data)
    try:
        return Credentials.from_json(obj)
    except ValueError as err:
        raise StateFileError(path, str(err)) from err


def write_credentials(path: Path, creds: Credentials) -> None:
    atomic_write(path, _encode(creds.to_json()))


# ---------------------------------------------------------------------------- session maps


def read_session_map(path: Path) -> dict[str, str]:
    """``current.json`` / ``namespace.json``: session → value. Missing file → ``{}``; content
    that is not a JSON object of strings → StateFileError. Empty values read as absent."""
    data = _read_state_bytes(path)
    if data is None:
        return {}
    obj = _parse_json_object(path, data)
    for key, value in obj.items():
        if not isinstance(value, str):
            raise StateFileError(path, f"value of {key!r} is not a string")
    return {key: value for key, value in obj.items() if value}


def write_session_map(path: Path, mapping: Mapping[str, str]) -> None:
    """Write a session map atomically; empty (cleared) values are left out."""
    atomic_write(path, _encode({key: value for key, value in mapping.items() if value}))


def read_legacy_current(path: Path) -> str:
    """The legacy ``current`` handle, whitespace stripped; ``""`` when absent."""
    data = _read_state_bytes(path)
    if data is None:
        return ""
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise StateFileError(path, f"not UTF-8 text: {err}") from err


@dataclass(frozen=True)
class LoadedState:
    """Everything a reload reads, taken from disk in one go (home.md §5.2)."""

    credentials: Credentials | None
    current: dict[str, str]
    namespace: dict[str, str]
    legacy_current_migrated: bool


def load_state(home: Home) -> LoadedState:
    """Read ``credentials``, ``current.json``, legacy ``current`` and ``namespace.json``.

    All or nothing: any failure other than "does not exist" raises StateFileError and the
    caller keeps its state. The legacy handle becomes session ``default``'s current handle
    unless ``current.json`` has a ``default`` key (home.md §4); nothing is written here.
    """
    credentials = read_credentials(home.credentials)
    current = read_session_map(home.current_json)
    legacy = read_legacy_current(home.legacy_current)
    namespace = read_session_map(home.namespace_json)
    migrated = bool(legacy) and "default" not in current
    if migrated:
        current["default"] = legacy
    return LoadedState(credentials, current, namespace, migrated)


def write_current(home: Home, mapping: Mapping[str, str]) -> None:
    """Write ``current.json``, then delete the legacy ``current`` (only after the rename
    succeeded), so the legacy value cannot come back (home.md §4)."""
    write_session_map(home.current_json, mapping)
    try:
        os.unlink(home.legacy_current)
    except FileNotFoundError:
        pass


def file_signature(path: Path) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` for the reload poller; ``None`` when the file cannot be stat'ed
    (absent, or its directory unreachable: the reload that follows reports the real error)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


# ---------------------------------------------------------------------------- pid and lock

_PID_RE = re.compile(rb"\s*([+-]?\d+)")
_PID_MAX = 2**31 - 1


def read_pid(path: Path) -> int:
    """The leading integer of ``daemon.pid``; 0 (not running) when the file is absent,
    unreadable, empty, garbage, or the number is not a valid pid."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except OSError:
        return 0
    match = _PID_RE.match(data)
    if match is None:
        return 0
    pid = int(match.group(1))
    return pid if 0 < pid <= _PID_MAX else 0


def write_pid(path: Path, pid: int) -> None:
    """Decimal pid, no newline, mode 0644, written atomically."""
    atomic_write(path, str(pid).encode("ascii"), mode=PID_MODE)


def remove_pid_if_ours(path: Path, pid: int) -> bool:
    """Remove ``daemon.pid`` if it still holds ``pid``; True when removed."""
    if read_pid(path) != pid:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def try_lock(path: Path) -> int | None:
    """Take the single-instance lock: open (create, 0600) ``path`` and ``flock`` it exclusively
    without blocking. Returns the descriptor, held until closed (or process exit), or ``None``
    when another open file description holds the lock. Other failures raise OSError."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_is_held(path: Path) -> bool:
    """Whether a daemon holds the lock: take it and release it at once. No lock file (or no
    home) → False; the file is never created here."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------------------- logout


def _remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree; a missing path (or entry) is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as entries:
                children = [Path(entry.path) for entry in entries]
            for child in children:
                _remove_tree(child)
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def remove_logout_files(home: Home) -> list[str]:
    """Delete ``credentials``, ``current.json``, legacy ``current`` and ``cursors/`` (home.md §6).

    Missing paths are fine. Every other failure is returned as
    ``logout: cannot remove <path>: <reason>`` after the remaining paths were tried.
    ``namespace.json`` is kept.
    """
    return remove_paths(home.credentials, home.current_json, home.legacy_current, home.cursors_dir)


def remove_paths(*paths: Path) -> list[str]:
    """Delete each path (a directory with its contents), as :func:`remove_logout_files` does.

    The daemon splits logout's removals between their owners: ``StateActor`` deletes the
    credential files, ``CursorsActor`` the cursor directory."""
    errors = []
    for path in paths:
        try:
            _remove_tree(path)
        except OSError as err:
            where = err.filename if err.filename is not None else path
            errors.append(f"logout: cannot remove {where}: {_reason(err)}")
    return errors


# ---------------------------------------------------------------------------- cursors

class CursorStore:
    """Per-session cursor files ``cursors/<session>.json`` (home.md §2.4, nats.md §8).

    Files are read on every use, never cached; every read-modify-write rewrites the whole
    file atomically. Not thread-safe: in the daemon its one user is ``CursorsActor``, whose
    mailbox serialises the read-modify-writes.
    """

    def __init__(self, home: Home) -> None:
        self._home = home

    def path(self, session: str) -> Path:
        """The session's cursor file. Names that could leave ``cursors/`` are refused."""
        if session in ("", ".", "..") or "/" in session or "\0" in session:
            raise ValueError(f"invalid session name for a cursor file: {session!r}")
        return self._home.cursors_dir / f"{session}.json"

    def load(self, session: str) -> dict[str, CursorEntry]:
        """All entries of a session. Missing, unparseable or unreadable file → ``{}``."""
        path = self.path(session)
        try:
            return self._read(path)
        except OSError as err:
            logger.warning("cannot read cursor file %s: %s", path, _reason(err))
            return {}

    def get(self, session: str, key: str) -> CursorEntry | None:
        return self.load(session).get(key)

    def advance(self, session: str, key: str, seq: int, created: int) -> bool:
        """Apply :func:`ppz.cursors.advance` to one entry; True when the file was rewritten.

        A file that exists but cannot be read raises OSError rather than being overwritten;
        write failures raise OSError too.
        """
        return self.advance_many(session, [(key, seq, created)])

    def advance_many(self, session: str, moves: Iterable[tuple[str, int, int]]) -> bool:
        """Apply :func:`ppz.cursors.advance` to each ``(key, seq, created)`` in order, with one
        read and at most one rewrite of the session's file; True when it was rewritten. Errors
        as :meth:`advance`."""
        path = self.path(session)
        entries = self._read(path)
        changed = False
        for key, seq, created in moves:
            entry = cursors.advance(entries.get(key), seq, created)
            if entry is not None:
                entries[key] = entry
                changed = True
        if changed:
            self._write(path, entries)
        return changed

    def seed(self, session: str, key: str, seq: int, created: int) -> bool:
        """Store ``{seq, created}`` only if the session has no entry for ``key`` (``read``
        with ``seed_latest``) and ``seq`` > 0; True when stored."""
        path = self.path(session)
        if seq <= 0:
            return False
        entries = self._read(path)
        if key in entries:
            return False
        entries[key] = CursorEntry(seq, created)
        self._write(path, entries)
        return True

    @staticmethod
    def _read(path: Path) -> dict[str, CursorEntry]:
        """Entries of one file; missing or unparseable → ``{}``, malformed entries dropped.
        Other read failures raise OSError."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        try:
            obj = _parse_json(data)
        except ValueError as err:
            logger.warning("ignoring unparseable cursor file %s: %s", path, err)
            return {}
        if not isinstance(obj, dict):
            logger.warning("ignoring cursor file %s: not a JSON object", path)
            return {}
        entries = {}
        for key, value in obj.items():
            try:
                entries[key] = CursorEntry.from_json(value)
            except ValueError:
                logger.warning("dropping malformed cursor entry %r in %s", key, path)
        return entries

    def _write(self, path: Path, entries: Mapping[str, CursorEntry]) -> None:
        """Rewrite one file (legacy values come out as objects)."""
        _ensure_private_dir(self._home.cursors_dir)
        data = _encode({key: entry.to_json() for key, entry in entries.items()})
        # Cursors move with every message a follow delivers: no fsync per write (a cursor that
        # loses its newest value in a power cut only repeats a message, it never skips one).
        atomic_write(path, data, unique=True, durable=False)
