"""The state directory: round trips, deletes, threads, the lock, bad directories."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.errors import ConfigError
from baxo_mqtt.state import (
    DATABASE_NAME,
    LOCK_NAME,
    JsonValue,
    StateDirectory,
    StateError,
    StateLockedError,
    resolve_state_dir,
)

json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDirectory]:
    opened = StateDirectory.open(tmp_path / "state", "bridge-a")
    yield opened
    opened.close()


def test_open_creates_the_directory_the_database_and_the_lock(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "state"
    with StateDirectory.open(directory, "bridge-a") as state:
        assert state.path == directory
        assert (directory / DATABASE_NAME).is_file()
        assert (directory / LOCK_NAME).read_text().splitlines()[0] == "bridge-a"


def test_saved_values_come_back_per_namespace(state: StateDirectory) -> None:
    state.save("cursors", {"c/d/T1": 578590638, "c/d/T2": 578590700})
    state.save("sparkplug", {"bdseq": 4, "aliases": {"T1": 1}})
    assert state.load("cursors") == {"c/d/T1": 578590638, "c/d/T2": 578590700}
    assert state.load("sparkplug") == {"bdseq": 4, "aliases": {"T1": 1}}
    assert state.load("nothing yet") == {}


def test_save_replaces_a_value_and_deletes_keys(state: StateDirectory) -> None:
    state.save("cursors", {"a": 1, "b": 2, "c": 3})
    state.save("cursors", {"a": 10}, delete=["b", "never-there"])
    assert state.load("cursors") == {"a": 10, "c": 3}
    state.save("cursors", {"c": 4}, delete=["c"])
    assert state.load("cursors") == {"a": 10}


def test_values_survive_closing_and_opening_again(tmp_path: Path) -> None:
    with StateDirectory.open(tmp_path, "bridge-a") as state:
        state.save("sparkplug", {"bdseq": 7})
    with StateDirectory.open(tmp_path, "bridge-b") as state:
        assert state.load("sparkplug") == {"bdseq": 7}


def test_a_value_that_is_not_json_changes_nothing(state: StateDirectory) -> None:
    state.save("n", {"kept": 1})
    with pytest.raises(ValueError, match="not JSON"):
        state.save("n", {"kept": 2, "bad": float("nan")})
    with pytest.raises(ValueError, match="not JSON"):
        state.save("n", {"bad": {1, 2}})  # type: ignore[dict-item]  # the point of the test
    assert state.load("n") == {"kept": 1}


def test_a_key_that_is_not_unicode_text_is_refused(state: StateDirectory) -> None:
    with pytest.raises(ValueError, match="Unicode"):
        state.save("n", {"\udc80": 1})
    assert state.load("n") == {}


def test_a_closed_directory_refuses_work_and_closes_twice(tmp_path: Path) -> None:
    state = StateDirectory.open(tmp_path, "bridge-a")
    state.close()
    state.close()
    with pytest.raises(StateError, match="closed"):
        state.save("n", {"a": 1})
    with pytest.raises(StateError, match="closed"):
        state.load("n")


@given(key=st.text(), value=json_values)
def test_any_json_value_round_trips(key: str, value: JsonValue) -> None:
    with (
        tempfile.TemporaryDirectory() as directory,
        StateDirectory.open(Path(directory), "bridge-a") as state,
    ):
        state.save("n", {key: value})
        assert state.load("n") == {key: value}


def test_threads_saving_at_once_lose_nothing(state: StateDirectory) -> None:
    threads_count, per_thread = 8, 60
    errors: list[Exception] = []

    def work(thread: int) -> None:
        try:
            for step in range(per_thread):
                state.save(f"t{thread}", {f"k{step}": step}, delete=[f"k{step - 1}"])
                state.save("shared", {f"t{thread}": step})
                state.load("shared")
        except Exception as error:  # noqa: BLE001 - collected: any failure must fail the test
            errors.append(error)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert not any(worker.is_alive() for worker in workers)
    for thread in range(threads_count):
        assert state.load(f"t{thread}") == {f"k{per_thread - 1}": per_thread - 1}
    assert state.load("shared") == {f"t{n}": per_thread - 1 for n in range(threads_count)}


def test_a_second_opener_is_refused_with_the_holders_client_id(tmp_path: Path) -> None:
    with StateDirectory.open(tmp_path, "bridge-a"):
        with pytest.raises(StateLockedError) as refused:
            StateDirectory.open(tmp_path, "bridge-b")
        assert isinstance(refused.value, ConfigError)
        (line,) = refused.value.problems
        assert str(tmp_path) in line
        assert "bridge-a" in line
        assert refused.value.holder == "bridge-a"
    # Released by close: the next bridge gets it and writes its own id.
    with StateDirectory.open(tmp_path, "bridge-b"):
        assert (tmp_path / LOCK_NAME).read_text().splitlines()[0] == "bridge-b"


def test_a_directory_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create") as refused:
        StateDirectory.open(blocker / "state", "bridge-a")
    assert str(blocker / "state") in refused.value.problems[0]
    with pytest.raises(ConfigError, match="not a directory"):
        StateDirectory.open(blocker, "bridge-a")


def test_a_read_only_directory_is_a_config_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # Root writes through file modes; sysfs refuses new files to everyone.
        with pytest.raises(ConfigError, match="cannot write"):
            StateDirectory.open(Path("/sys/kernel"), "bridge-a")
        return
    directory = tmp_path / "state"
    directory.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError, match="cannot write"):
            StateDirectory.open(directory, "bridge-a")
    finally:
        directory.chmod(0o700)


def test_a_database_file_that_is_not_sqlite_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / DATABASE_NAME).write_bytes(b"this is not a database, " * 100)
    with pytest.raises(ConfigError, match=DATABASE_NAME):
        StateDirectory.open(tmp_path, "bridge-a")
    # The refused open let go of the lock.
    (tmp_path / DATABASE_NAME).unlink()
    StateDirectory.open(tmp_path, "bridge-a").close()


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    StateDirectory.open(tmp_path, "bridge-a").close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(ConfigError, match="newer"):
        StateDirectory.open(tmp_path, "bridge-a")


def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    with StateDirectory.open(tmp_path, "bridge-a") as state:
        state.save("n", {"a": 1})
        with sqlite3.connect(tmp_path / DATABASE_NAME) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        reader.close()


def test_resolve_prefers_the_configured_directory(tmp_path: Path) -> None:
    environ = {"STATE_DIRECTORY": str(tmp_path / "systemd")}
    assert resolve_state_dir(str(tmp_path / "mine"), environ) == tmp_path / "mine"
    assert resolve_state_dir("~/x", environ) == Path.home() / "x"


def test_resolve_uses_systemds_state_directory_first_entry(tmp_path: Path) -> None:
    environ = {"STATE_DIRECTORY": f"{tmp_path}/one:{tmp_path}/two"}
    assert resolve_state_dir("", environ) == tmp_path / "one"


def test_resolve_takes_the_system_directory_when_it_can_be_created(tmp_path: Path) -> None:
    system = tmp_path / "var" / "lib" / "baxo-mqtt"
    assert resolve_state_dir("", {}, system_dir=system, user_dir=tmp_path / "u") == system


def test_resolve_falls_back_to_the_users_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    user = tmp_path / "home" / ".local" / "state" / "baxo-mqtt"
    chosen = resolve_state_dir("", {}, system_dir=blocker / "baxo-mqtt", user_dir=user)
    assert chosen == user


def test_resolve_defaults_name_the_documented_directories() -> None:
    chosen = resolve_state_dir("", {})
    expected = {Path("/var/lib/baxo-mqtt"), Path.home() / ".local/state/baxo-mqtt"}
    assert chosen in expected
