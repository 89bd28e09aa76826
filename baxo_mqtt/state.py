"""The state directory: what must survive a restart, in one SQLite database.

``state.dir`` holds ``state.sqlite3`` (history cursors, the Sparkplug bdSeq,
metric datatypes and aliases) and ``state.lock``. This is the only module that
imports ``sqlite3``; the rest of the bridge sees namespaces of JSON values::

    state = StateDirectory.open(resolve_state_dir(settings.state.dir), client_id)
    cursors = state.load("history.cursors")
    state.save("history.cursors", {"c/d/TAG": 578590638}, delete=["c/d/OLD"])
    state.close()

Why it is built this way:

* **One transaction per ``save``**, in WAL mode with ``synchronous=FULL``: a
  ``kill -9`` (or a power cut) at any moment leaves the database readable and
  holding every ``save`` that returned, and none half-done.
* **An exclusive ``flock`` on ``state.lock``**, held until ``close`` (the kernel
  drops it when the process dies, so a crash never leaves a stale lock). A second
  bridge on the same directory would move the same cursors and reuse the same
  bdSeq; it stops at start with ``StateLockedError`` instead, naming the holder's
  client id, which the holder writes into the lock file.
* **No fallback to memory**: a directory that cannot be created or written is a
  ``ConfigError`` (exit 2), because a bridge that silently forgets its progress
  at every restart would publish duplicates or leave gaps without saying so.
* **One connection behind a lock**: ``save`` and ``load`` may be called from any
  thread; SQLite's own locking is not needed between threads of one process.

Values are stored as JSON text. Only finite numbers are accepted (``NaN`` is not
JSON), so what ``load`` returns equals what ``save`` was given.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    import sqlite3

from baxo_mqtt.errors import BaxoMqttError, ConfigError

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]

DATABASE_NAME = "state.sqlite3"
LOCK_NAME = "state.lock"
SYSTEM_STATE_DIR = Path("/var/lib/baxo-mqtt")
USER_STATE_DIR = Path("~/.local/state/baxo-mqtt")
STATE_DIRECTORY_VARIABLE = "STATE_DIRECTORY"

# Bumped when the table layout changes; an older database is migrated in _prepare.
_SCHEMA_VERSION = 1

# How long a statement waits for SQLite's own file lock. Only this process writes
# (the flock sees to that), so a wait means a checkpoint is running: a short one.
_BUSY_TIMEOUT_S = 10.0


class StateLockedError(ConfigError):
    """Another running bridge holds the state directory."""

    def __init__(self, directory: Path, holder: str) -> None:
        self.directory = directory
        self.holder = holder
        super().__init__(
            [
                f"state.dir: {directory} is in use by another running bridge "
                f"(client id {holder}); two bridges must not share a state directory"
            ]
        )


class StateError(BaxoMqttError):
    """A read or write of the state database failed after it was opened (disk full, I/O)."""


class StateDirectory:
    """An open, locked state directory. Build it with ``StateDirectory.open``."""

    path: Path

    def __init__(
        self, path: Path, connection: sqlite3.Connection, lock_fd: int, client_id: str
    ) -> None:
        self.path = path
        self.client_id = client_id
        self._connection: sqlite3.Connection | None = connection
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()

    @classmethod
    def open(cls, directory: Path, client_id: str) -> StateDirectory:
        """Create (if needed), lock and open ``directory``; see the module docstring."""
        directory = Path(directory).expanduser().absolute()
        _create_directory(directory)
        lock_fd = _acquire_lock(directory, client_id)
        try:
            connection = _open_database(directory / DATABASE_NAME)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(directory, connection, lock_fd, client_id)

    def load(self, namespace: str) -> dict[str, JsonValue]:
        """Every key of ``namespace`` with its value; empty when nothing was saved."""
        with self._using() as connection:
            rows = connection.execute(
                "SELECT key, value FROM entries WHERE namespace = ? ORDER BY key", (namespace,)
            ).fetchall()
        result: dict[str, JsonValue] = {}
        for key, text in rows:
            result[key] = json.loads(text)
        return result

    def save(
        self,
        namespace: str,
        items: Mapping[str, JsonValue],
        *,
        delete: Iterable[str] = (),
    ) -> None:
        """Set ``items`` and remove the keys in ``delete``, all in one transaction.

        When this returns, the change is on disk. A key both set and deleted is deleted.
        """
        # Encode before touching the database: a value that is not JSON changes nothing.
        encoded = [(namespace, key, _encode(key, value)) for key, value in items.items()]
        removed = [(namespace, key) for key in delete]
        with self._using() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    "INSERT INTO entries (namespace, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                    encoded,
                )
                connection.executemany(
                    "DELETE FROM entries WHERE namespace = ? AND key = ?", removed
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the database and release the lock; calling it again does nothing."""
        with self._mutex:
            connection, self._connection = self._connection, None
            if connection is None:
                return
            try:
                connection.close()
            finally:
                os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        import sqlite3  # loaded already: this directory is open (see _open_database)

        with self._mutex:
            if self._connection is None:
                raise StateError(f"state directory {self.path} is closed")
            try:
                yield self._connection
            except sqlite3.Error as error:
                raise StateError(f"state database {self.path / DATABASE_NAME}: {error}") from None
            except UnicodeEncodeError:
                raise ValueError("a state namespace or key is not valid Unicode text") from None


def resolve_state_dir(
    configured: str,
    environ: Mapping[str, str] | None = None,
    *,
    system_dir: Path = SYSTEM_STATE_DIR,
    user_dir: Path = USER_STATE_DIR,
) -> Path:
    """``state.dir`` when set; else ``$STATE_DIRECTORY``; else the system or the user's directory.

    systemd's ``StateDirectory=`` sets ``$STATE_DIRECTORY`` (a colon-separated list when
    several are declared: the first is ours). ``/var/lib/baxo-mqtt`` is taken when it is a
    writable directory or can be created; otherwise, as for a user running the bridge by
    hand, ``~/.local/state/baxo-mqtt``.
    """
    environ = os.environ if environ is None else environ
    if configured:
        return Path(configured).expanduser()
    from_systemd = environ.get(STATE_DIRECTORY_VARIABLE, "").split(":")[0]
    if from_systemd:
        return Path(from_systemd)
    if _writable_or_creatable(system_dir):
        return system_dir
    return user_dir.expanduser()


def _writable_or_creatable(directory: Path) -> bool:
    candidate = directory
    while not candidate.exists():
        if candidate.parent == candidate:
            return False
        candidate = candidate.parent
    return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)


def _create_directory(directory: Path) -> None:
    try:
        # 0o700: cursors and aliases are nobody else's business; mkdir honours the umask too.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError([f"state.dir: {directory} exists and is not a directory"]) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([f"state.dir: cannot create {directory}: {reason}"]) from None


def _acquire_lock(directory: Path, client_id: str) -> int:
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([f"state.dir: cannot write in {directory}: {reason}"]) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise StateLockedError(directory, holder) from None
    except OSError as error:
        os.close(fd)
        reason = error.strerror or str(error)
        raise ConfigError([f"state.dir: cannot lock {path}: {reason}"]) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{client_id}\n{os.getpid()}\n".encode(), 0)
    except OSError as error:
        os.close(fd)
        reason = error.strerror or str(error)
        raise ConfigError([f"state.dir: cannot write {path}: {reason}"]) from None
    return fd


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    # Empty when the holder has locked the file but not yet written its id.
    return text.partition("\n")[0].strip() or "unknown"


def _open_database(path: Path) -> sqlite3.Connection:
    # Imported here, not at the top: sqlite3 costs some 1.5 MB of memory, which a
    # bridge with no feature that keeps state should not pay.
    import sqlite3

    connection: sqlite3.Connection | None = None
    try:
        # isolation_level=None: transactions are begun and committed explicitly in save.
        # check_same_thread=False: the connection is shared, behind StateDirectory._mutex.
        connection = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        _prepare(connection)
    except sqlite3.Error as error:
        if connection is not None:
            connection.close()
        raise ConfigError([f"state.dir: cannot use {path}: {error}"]) from None
    return connection


def _prepare(connection: sqlite3.Connection) -> None:
    import sqlite3  # loaded already by _open_database

    # WAL: a commit is one append to the log, and a reader never sees half a transaction.
    # FULL: the log is synced at every commit, so a returned save survives a power cut too.
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode})")
    connection.execute("PRAGMA synchronous = FULL")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > _SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"written by a newer baxo-mqtt (schema {version}, this one reads {_SCHEMA_VERSION})"
        )
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS entries ("
            " namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (namespace, key)) WITHOUT ROWID"
        )
        connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    # A write test now rather than at the first save: a read-only database file must
    # stop the start (exit 2), not the first history cursor an hour later.
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("ROLLBACK")


def _encode(key: str, value: JsonValue) -> str:
    # ASCII escapes keep a lone surrogate in a value storable; a key must be text SQLite takes.
    try:
        key.encode("utf-8")
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except UnicodeEncodeError:
        raise ValueError(f"state key {key!r} is not valid Unicode text") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"state value for {key!r} is not JSON: {error}") from None
