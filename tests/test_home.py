"""The ``$PPZ_HOME`` state files (spec/home.md)."""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ppz.cursors import CursorEntry
from ppz.home import (
    Credentials,
    CursorStore,
    Home,
    LoadedState,
    StateFileError,
    atomic_write,
    file_signature,
    load_state,
    lock_is_held,
    read_credentials,
    read_legacy_current,
    read_pid,
    read_session_map,
    remove_logout_files,
    remove_pid_if_ours,
    resolve_home,
    resolve_socket,
    try_lock,
    write_credentials,
    write_current,
    write_pid,
    write_session_map,
)

IS_ROOT = os.geteuid() == 0
T1 = 1777636200123456789
T2 = 1777636299000000000
CREDS = Credentials(
    url="http://127.0.0.1:8080",
    api_key="ppz_0123456789abcdef0123456789",
    account_id="0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d",
    account_name="alpha",
    nats_user_jwt="eyJ0eXAi.jwt",
    nats_user_seed="SUAseed",
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home.at(tmp_path / "home")
    h.ensure_dir()
    return h


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# ---------------------------------------------------------------------------- resolution


def test_ppz_home_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PPZ_HOME", str(tmp_path / "h"))
    assert resolve_home() == tmp_path / "h"


@pytest.mark.parametrize("ppz_home", [None, ""])
def test_default_home_is_dot_ppz_in_user_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ppz_home: str | None
) -> None:
    if ppz_home is None:
        monkeypatch.delenv("PPZ_HOME", raising=False)
    else:
        monkeypatch.setenv("PPZ_HOME", ppz_home)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_home() == tmp_path / ".ppz"


def test_unknown_user_home_falls_back_to_relative_dot_ppz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPZ_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    assert resolve_home() == Path(".ppz")
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: {}[uid])  # no password entry either
    assert resolve_home() == Path(".ppz")


@pytest.mark.parametrize("env", [None, ""])
def test_socket_defaults_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str | None) -> None:
    if env is None:
        monkeypatch.delenv("PPZ_IPC_SOCKET", raising=False)
    else:
        monkeypatch.setenv("PPZ_IPC_SOCKET", env)
    assert resolve_socket(tmp_path) == tmp_path / "daemon.sock"


def test_socket_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PPZ_IPC_SOCKET", "/run/x.sock")
    assert resolve_socket(tmp_path) == Path("/run/x.sock")


def test_home_from_env_and_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PPZ_HOME", str(tmp_path))
    monkeypatch.setenv("PPZ_IPC_SOCKET", str(tmp_path / "elsewhere.sock"))
    h = Home.from_env()
    assert h == Home(tmp_path, tmp_path / "elsewhere.sock")
    names = {
        h.lock: "daemon.lock",
        h.pid: "daemon.pid",
        h.log: "daemon.log",
        h.credentials: "credentials",
        h.current_json: "current.json",
        h.legacy_current: "current",
        h.namespace_json: "namespace.json",
        h.cursors_dir: "cursors",
        h.events: "nats-events.jsonl",
        h.lifecycle: "diagnostics-lifecycle.jsonl",
    }
    for path, name in names.items():
        assert path == tmp_path / name
    assert Home.at(tmp_path).socket == tmp_path / "daemon.sock"


# ---------------------------------------------------------------------------- ensure_dir


def test_ensure_dir_creates_0700_with_parents(tmp_path: Path, umask_022: None) -> None:
    h = Home.at(tmp_path / "a" / "b" / "home")
    h.ensure_dir()
    assert mode_of(h.root) == 0o700


def test_ensure_dir_ignores_a_narrow_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        Home.at(tmp_path / "home").ensure_dir()
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "home") == 0o700


@pytest.mark.parametrize("wide", [0o755, 0o777, 0o710, 0o701])
def test_ensure_dir_tightens_a_wider_home(tmp_path: Path, wide: int) -> None:
    root = tmp_path / "home"
    root.mkdir()
    os.chmod(root, wide)
    (root / "keep").write_text("x")
    Home.at(root).ensure_dir()
    assert mode_of(root) == 0o700
    assert (root / "keep").read_text() == "x"


def test_ensure_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")
    with pytest.raises(NotADirectoryError):
        Home.at(tmp_path / "home").ensure_dir()


# ---------------------------------------------------------------------------- atomic_write


def test_atomic_write_creates_0600_and_replaces(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    assert target.read_bytes() == b"old"
    assert mode_of(target) == 0o600
    atomic_write(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert listing(tmp_path) == ["f"]


def test_atomic_write_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "pid", b"1", mode=0o644)
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "pid") == 0o644


def test_atomic_write_reuses_a_leftover_temp_with_the_right_mode(tmp_path: Path) -> None:
    leftover = tmp_path / "f.tmp"
    leftover.write_bytes(b"half-written garbage that is longer")
    os.chmod(leftover, 0o666)
    atomic_write(tmp_path / "f", b"ok")
    assert (tmp_path / "f").read_bytes() == b"ok"
    assert mode_of(tmp_path / "f") == 0o600
    assert listing(tmp_path) == ["f"]


@pytest.mark.parametrize(("unique", "pattern"), [(False, r"f\.tmp"), (True, r"f\.tmp-[0-9a-f]+")])
def test_atomic_write_temp_name_is_in_the_same_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: bool, pattern: str
) -> None:
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write(tmp_path / "f", b"x", unique=unique)
    [(src, dst)] = seen
    assert dst == str(tmp_path / "f")
    assert Path(src).parent == tmp_path
    assert re.fullmatch(pattern, Path(src).name)


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
@pytest.mark.parametrize("unique", [False, True])
def test_atomic_write_failure_leaves_target_and_no_temp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failing: str, unique: bool
) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new", unique=unique)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only directories")
def test_atomic_write_into_read_only_dir_fails_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(PermissionError):
            atomic_write(target, b"new")
    finally:
        os.chmod(tmp_path, 0o700)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]


def test_atomic_write_partial_os_writes_are_completed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    atomic_write(tmp_path / "f", b"0123456789")
    assert (tmp_path / "f").read_bytes() == b"0123456789"


def test_concurrent_unique_writers_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "f"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for _ in range(20):
                atomic_write(target, json.dumps({"n": n}).encode(), unique=True)
        except BaseException as err:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_bytes())["n"] in range(8)
    assert listing(tmp_path) == ["f"]


# ---------------------------------------------------------------------------- StateFileError


def test_state_file_error_names_file_and_reason(tmp_path: Path) -> None:
    err = StateFileError(tmp_path / "current.json", "invalid JSON")
    assert str(err) == f"{tmp_path / 'current.json'}: invalid JSON"
    assert err.path == tmp_path / "current.json"
    assert err.reason == "invalid JSON"


# ---------------------------------------------------------------------------- credentials


def test_key_prefix() -> None:
    assert CREDS.key_prefix == "01234567"
    assert Credentials("u", "ppz_abc").key_prefix == "abc"
    assert Credentials("u", "abc").key_prefix == "abc"
    assert Credentials("u", "xyz_0123456789").key_prefix == "xyz_0123"
    assert Credentials("u", "ppz_").key_prefix == ""


def test_credentials_json_omits_empty_optional_fields() -> None:
    assert Credentials("u", "k").to_json() == {"url": "u", "api_key": "k"}
    assert Credentials("u", "k", account_name="a").to_json() == {
        "url": "u",
        "api_key": "k",
        "account_name": "a",
    }
    assert Credentials.from_json(CREDS.to_json()) == CREDS


def test_credentials_from_json_drops_unknown_fields_and_reads_null_as_empty() -> None:
    creds = Credentials.from_json({"url": "u", "api_key": "k", "nats_url": "nats://x", "account_id": None})
    assert creds == Credentials("u", "k")
    assert "nats_url" not in creds.to_json()


def test_credentials_repr_hides_secrets() -> None:
    text = repr(CREDS)
    assert "0123456789abcdef" not in text and "SUAseed" not in text and "jwt" not in text
    assert "alpha" in text


def test_with_nats_returns_a_copy() -> None:
    base = Credentials("u", "k", account_id="A", account_name="alpha")
    rotated = base.with_nats("J", "S")
    assert rotated == Credentials("u", "k", "A", "alpha", "J", "S")
    assert base.nats_user_jwt == ""
    assert base.with_nats("J", "S", account_id="B", account_name="beta") == Credentials(
        "u", "k", "B", "beta", "J", "S"
    )


@pytest.mark.parametrize("content", [None, b"", b"   \n\t ", b"\n"])
def test_absent_or_blank_credentials_mean_logged_out(home: Home, content: bytes | None) -> None:
    if content is not None:
        home.credentials.write_bytes(content)
    assert read_credentials(home.credentials) is None


def test_credentials_round_trip_0600(home: Home, umask_022: None) -> None:
    write_credentials(home.credentials, CREDS)
    assert mode_of(home.credentials) == 0o600
    assert read_credentials(home.credentials) == CREDS
    assert json.loads(home.credentials.read_bytes()) == CREDS.to_json()


def test_unknown_credential_fields_are_not_kept(home: Home) -> None:
    home.credentials.write_text(json.dumps({"url": "u", "api_key": "k", "nats_url": "nats://x"}))
    creds = read_credentials(home.credentials)
    assert creds is not None
    write_credentials(home.credentials, creds)
    assert json.loads(home.credentials.read_bytes()) == {"url": "u", "api_key": "k"}


@pytest.mark.parametrize(
    "content",
    [
        b"[]",
        b'"x"',
        b"null",
        b"42",
        b"{}",
        b'{"url": "http://h"}',
        b'{"api_key": "k"}',
        b'{"url": "", "api_key": "k"}',
        b'{"url": "u", "api_key": ""}',
        b'{"url": 1, "api_key": "k"}',
        b'{"url": "u", "api_key": "k", "account_id": 5}',
        b'{"url": "u", "api_key": "k"',
        b"\xff\xfe garbage",
        b"[" * 100_000,
    ],
)
def test_corrupt_credentials_fail_naming_the_file(home: Home, content: bytes) -> None:
    home.credentials.write_bytes(content)
    with pytest.raises(StateFileError) as info:
        read_credentials(home.credentials)
    assert str(home.credentials) in str(info.value)


def test_unreadable_credentials_fail(home: Home) -> None:
    home.credentials.mkdir()  # EISDIR: an OSError that is not "does not exist"
    with pytest.raises(StateFileError, match="credentials"):
        read_credentials(home.credentials)


@pytest.mark.skipif(IS_ROOT, reason="mode 000 does not stop root from reading")
def test_mode_000_credentials_fail(home: Home) -> None:
    write_credentials(home.credentials, CREDS)
    os.chmod(home.credentials, 0)
    with pytest.raises(StateFileError, match="Permission denied"):
        read_credentials(home.credentials)


def test_too_many_open_files_is_an_error_not_logged_out(monkeypatch: pytest.MonkeyPatch, home: Home) -> None:
    write_credentials(home.credentials, CREDS)

    def emfile(*args: object, **kwargs: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("builtins.open", emfile)
    with pytest.raises(StateFileError, match="Too many open files"):
        read_credentials(home.credentials)


# ---------------------------------------------------------------------------- session maps


def test_missing_session_map_is_empty(home: Home) -> None:
    assert read_session_map(home.current_json) == {}


def test_session_map_round_trip_and_cleared_values(home: Home, umask_022: None) -> None:
    write_session_map(home.current_json, {"default": "alice", "sid-48213": "bob", "gone": ""})
    assert mode_of(home.current_json) == 0o600
    assert json.loads(home.current_json.read_bytes()) == {"default": "alice", "sid-48213": "bob"}
    assert read_session_map(home.current_json) == {"default": "alice", "sid-48213": "bob"}


def test_empty_session_map_is_written_as_empty_object(home: Home) -> None:
    write_session_map(home.namespace_json, {"a": ""})
    assert home.namespace_json.read_bytes() == b"{}"
    assert read_session_map(home.namespace_json) == {}


def test_empty_values_on_disk_read_as_absent(home: Home) -> None:
    home.current_json.write_text('{"a": "", "b": "bob"}')
    assert read_session_map(home.current_json) == {"b": "bob"}


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'"x"', b'{"a": 1}', b'{"a": null}', b'{"a": ["b"]}'])
def test_bad_session_map_fails(home: Home, content: bytes) -> None:
    home.current_json.write_bytes(content)
    with pytest.raises(StateFileError, match="current.json"):
        read_session_map(home.current_json)


def test_legacy_current(home: Home) -> None:
    assert read_legacy_current(home.legacy_current) == ""
    home.legacy_current.write_text("  bob\n")
    assert read_legacy_current(home.legacy_current) == "bob"
    home.legacy_current.write_bytes(b"\xff")
    with pytest.raises(StateFileError, match="current"):
        read_legacy_current(home.legacy_current)


# ---------------------------------------------------------------------------- load_state


def test_load_state_of_an_empty_home(home: Home) -> None:
    assert load_state(home) == LoadedState(None, {}, {}, False)


def test_load_state_reads_everything(home: Home) -> None:
    write_credentials(home.credentials, CREDS)
    write_session_map(home.current_json, {"default": "alice"})
    write_session_map(home.namespace_json, {"sid-1": "team-a"})
    assert load_state(home) == LoadedState(CREDS, {"default": "alice"}, {"sid-1": "team-a"}, False)


def test_legacy_current_becomes_default_session(home: Home) -> None:
    home.legacy_current.write_text(" bob \n")
    write_session_map(home.current_json, {"sid-1": "carol"})
    state = load_state(home)
    assert state.current == {"sid-1": "carol", "default": "bob"}
    assert state.legacy_current_migrated
    assert home.legacy_current.exists()  # loading never writes


def test_default_in_current_json_beats_legacy_current(home: Home) -> None:
    home.legacy_current.write_text("bob")
    write_session_map(home.current_json, {"default": "alice"})
    state = load_state(home)
    assert state.current == {"default": "alice"}
    assert not state.legacy_current_migrated


def test_blank_legacy_current_is_ignored(home: Home) -> None:
    home.legacy_current.write_text(" \n")
    assert load_state(home) == LoadedState(None, {}, {}, False)


def test_unset_after_migration_stays_unset(home: Home) -> None:
    home.legacy_current.write_text("bob\n")
    state = load_state(home)
    write_current(home, state.current)
    assert not home.legacy_current.exists()
    assert load_state(home).current == {"default": "bob"}
    write_current(home, {"default": ""})  # ppz unset handle
    assert load_state(home) == LoadedState(None, {}, {}, False)


def test_write_current_without_legacy_file(home: Home) -> None:
    write_current(home, {"a": "b"})
    assert read_session_map(home.current_json) == {"a": "b"}


def test_write_current_keeps_legacy_file_when_the_write_fails(
    monkeypatch: pytest.MonkeyPatch, home: Home
) -> None:
    home.legacy_current.write_text("bob")

    def boom(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_current(home, {"default": "bob"})
    monkeypatch.undo()
    assert home.legacy_current.read_text() == "bob"
    assert listing(home.root) == ["current"]


def _corrupt_credentials(h: Home) -> None:
    h.credentials.write_text("[]")


def _corrupt_current(h: Home) -> None:
    h.current_json.write_text('{"default": "ali')


def _unreadable_legacy(h: Home) -> None:
    h.legacy_current.unlink()
    h.legacy_current.mkdir()


def _corrupt_namespace(h: Home) -> None:
    h.namespace_json.write_text('{"s": 1}')


@pytest.mark.parametrize(
    ("corrupt", "name"),
    [
        (_corrupt_credentials, "credentials"),
        (_corrupt_current, "current.json"),
        (_unreadable_legacy, "current"),
        (_corrupt_namespace, "namespace.json"),
    ],
)
def test_load_state_is_all_or_nothing(home: Home, corrupt: Callable[[Home], None], name: str) -> None:
    write_credentials(home.credentials, CREDS)
    write_session_map(home.current_json, {"sid-1": "carol"})
    home.legacy_current.write_text("bob")
    write_session_map(home.namespace_json, {"sid-1": "team-a"})
    corrupt(home)
    before = {p: (p.read_bytes() if p.is_file() else None) for p in home.root.iterdir()}
    with pytest.raises(StateFileError) as info:
        load_state(home)
    assert info.value.path == home.root / name
    after = {p: (p.read_bytes() if p.is_file() else None) for p in home.root.iterdir()}
    assert after == before


# ---------------------------------------------------------------------------- file_signature


def test_file_signature(home: Home) -> None:
    assert file_signature(home.credentials) is None
    write_credentials(home.credentials, CREDS)
    sig = file_signature(home.credentials)
    st = os.stat(home.credentials)
    assert sig == (st.st_mtime_ns, st.st_size)
    assert file_signature(home.credentials) == sig
    write_credentials(home.credentials, CREDS.with_nats("J2", "S2"))
    assert file_signature(home.credentials) != sig
    home.credentials.write_bytes(b"")
    assert file_signature(home.credentials) == (os.stat(home.credentials).st_mtime_ns, 0)
    home.credentials.unlink()
    assert file_signature(home.credentials) is None


def test_file_signature_sees_same_size_rewrite(home: Home) -> None:
    home.current_json.write_text('{"a":"b"}')
    os.utime(home.current_json, ns=(1, 1_000_000_000))
    sig = file_signature(home.current_json)
    write_session_map(home.current_json, {"a": "c"})
    assert file_signature(home.current_json) != sig


# ---------------------------------------------------------------------------- pid


def test_pid_round_trip(home: Home, umask_022: None) -> None:
    write_pid(home.pid, 4242)
    assert home.pid.read_bytes() == b"4242"
    assert mode_of(home.pid) == 0o644
    assert read_pid(home.pid) == 4242


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", 0),
        (b"abc", 0),
        (b"\n", 0),
        (b"12abc", 12),
        (b"  42\n", 42),
        (b"+7", 7),
        (b"-5", 0),
        (b"0", 0),
        (b"99999999999999", 0),
        (b"\x00\x01", 0),
    ],
)
def test_read_pid_parses_a_leading_integer(home: Home, content: bytes, expected: int) -> None:
    home.pid.write_bytes(content)
    assert read_pid(home.pid) == expected


def test_read_pid_absent_or_unreadable_is_zero(home: Home) -> None:
    assert read_pid(home.pid) == 0
    home.pid.mkdir()
    assert read_pid(home.pid) == 0


def test_remove_pid_only_if_ours(home: Home) -> None:
    assert not remove_pid_if_ours(home.pid, 100)
    write_pid(home.pid, 200)
    assert not remove_pid_if_ours(home.pid, 100)
    assert read_pid(home.pid) == 200
    assert remove_pid_if_ours(home.pid, 200)
    assert not home.pid.exists()


# ---------------------------------------------------------------------------- lock

HOLDER = """
import sys
from pathlib import Path
from ppz.home import try_lock
fd = try_lock(Path(sys.argv[1]))
print("busy" if fd is None else "locked", flush=True)
sys.stdin.read()
"""


def spawn_holder(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def test_lock_is_exclusive_across_processes(home: Home) -> None:
    proc = spawn_holder(home.lock)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        assert try_lock(home.lock) is None
        assert lock_is_held(home.lock)
    finally:
        finish(proc)
    assert not lock_is_held(home.lock)
    fd = try_lock(home.lock)
    assert fd is not None
    os.close(fd)
    assert home.lock.exists()


def test_held_lock_keeps_other_processes_out(home: Home) -> None:
    fd = try_lock(home.lock)
    assert fd is not None
    try:
        proc = spawn_holder(home.lock)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "busy"
        finish(proc)
    finally:
        os.close(fd)


def test_lock_file_mode_and_release(home: Home, umask_022: None) -> None:
    fd = try_lock(home.lock)
    assert fd is not None
    assert mode_of(home.lock) == 0o600
    assert lock_is_held(home.lock)
    assert try_lock(home.lock) is None  # a second open file description in this process
    os.close(fd)
    assert not lock_is_held(home.lock)
    assert not lock_is_held(home.lock)  # checking does not keep it


def test_lock_is_not_held_without_lock_file_or_home(tmp_path: Path) -> None:
    assert not lock_is_held(tmp_path / "daemon.lock")
    assert not (tmp_path / "daemon.lock").exists()
    assert not lock_is_held(tmp_path / "no-home" / "daemon.lock")
    (tmp_path / "file").write_text("")
    assert not lock_is_held(tmp_path / "file" / "daemon.lock")


# ---------------------------------------------------------------------------- logout


def populate(h: Home) -> None:
    write_credentials(h.credentials, CREDS)
    write_session_map(h.current_json, {"default": "alice"})
    h.legacy_current.write_text("bob")
    write_session_map(h.namespace_json, {"sid-1": "team-a"})
    CursorStore(h).advance("default", "k", 3, T1)
    (h.cursors_dir / "nested").mkdir()
    (h.cursors_dir / "nested" / "x").write_text("")
    (h.root / "subs").mkdir()
    h.lock.write_bytes(b"")


def test_logout_removes_the_four_paths_and_keeps_the_rest(home: Home) -> None:
    populate(home)
    assert remove_logout_files(home) == []
    assert listing(home.root) == ["daemon.lock", "namespace.json", "subs"]
    assert remove_logout_files(home) == []  # idempotent, missing paths are fine


def test_logout_without_home(tmp_path: Path) -> None:
    assert remove_logout_files(Home.at(tmp_path / "missing")) == []


def test_logout_removes_a_cursors_symlink_not_its_target(home: Home, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    home.cursors_dir.symlink_to(target)
    assert remove_logout_files(home) == []
    assert not home.cursors_dir.exists() and not home.cursors_dir.is_symlink()
    assert (target / "keep").read_text() == "x"


def test_logout_reports_failures_and_continues(monkeypatch: pytest.MonkeyPatch, home: Home) -> None:
    populate(home)
    real_unlink = os.unlink

    def unlink(path: str | Path) -> None:
        if Path(path) == home.credentials:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    errors = remove_logout_files(home)
    assert errors == [f"logout: cannot remove {home.credentials}: Permission denied"]
    assert listing(home.root) == ["credentials", "daemon.lock", "namespace.json", "subs"]


# ---------------------------------------------------------------------------- cursor files


@pytest.mark.parametrize("session", ["", ".", "..", "a/b", "../x", "a\0b"])
def test_cursor_store_refuses_unsafe_session_names(home: Home, session: str) -> None:
    store = CursorStore(home)
    with pytest.raises(ValueError):
        store.path(session)
    with pytest.raises(ValueError):
        store.advance(session, "k", 1, 0)


def test_cursor_file_path(home: Home) -> None:
    assert CursorStore(home).path("sid-48213") == home.cursors_dir / "sid-48213.json"
    assert CursorStore(home).path("..x") == home.cursors_dir / "..x.json"


def test_missing_cursor_file_is_empty(home: Home) -> None:
    store = CursorStore(home)
    assert store.load("default") == {}
    assert store.get("default", "k") is None
    assert not home.cursors_dir.exists()


def test_advance_creates_private_dir_and_file(home: Home, umask_022: None) -> None:
    store = CursorStore(home)
    assert store.advance("default", "acct.alice.inbox", 12, T1)
    assert mode_of(home.cursors_dir) == 0o700
    path = home.cursors_dir / "default.json"
    assert mode_of(path) == 0o600
    assert json.loads(path.read_bytes()) == {"acct.alice.inbox": {"seq": 12, "created": T1}}
    assert store.get("default", "acct.alice.inbox") == CursorEntry(12, T1)
    assert listing(home.cursors_dir) == ["default.json"]


def test_existing_wide_cursors_dir_is_tightened(home: Home) -> None:
    home.cursors_dir.mkdir(mode=0o755)
    os.chmod(home.cursors_dir, 0o755)
    CursorStore(home).advance("s", "k", 1, 0)
    assert mode_of(home.cursors_dir) == 0o700


def test_cursor_advance_is_monotonic_per_incarnation(home: Home) -> None:
    store = CursorStore(home)
    assert store.advance("s", "k", 10, T1)
    assert not store.advance("s", "k", 10, T1)
    assert not store.advance("s", "k", 4, T1)
    assert store.get("s", "k") == CursorEntry(10, T1)
    assert store.advance("s", "k", 4, T2)  # stream recreated
    assert store.get("s", "k") == CursorEntry(4, T2)


def test_cursor_seq_zero_writes_nothing(home: Home) -> None:
    assert not CursorStore(home).advance("s", "k", 0, T1)
    assert not home.cursors_dir.exists()


def test_legacy_int_reads_as_object_and_is_rewritten_on_next_write(home: Home) -> None:
    home.cursors_dir.mkdir()
    path = home.cursors_dir / "default.json"
    path.write_text('{"old": 12, "other": 4}')
    store = CursorStore(home)
    assert store.load("default") == {"old": CursorEntry(12, 0), "other": CursorEntry(4, 0)}
    assert not store.advance("default", "old", 11, 0)  # no change, no write
    assert json.loads(path.read_bytes()) == {"old": 12, "other": 4}
    assert store.advance("default", "new", 1, T1)
    assert json.loads(path.read_bytes()) == {
        "old": {"seq": 12, "created": 0},
        "other": {"seq": 4, "created": 0},
        "new": {"seq": 1, "created": T1},
    }


def test_legacy_entry_is_overwritten_once_creation_is_known(home: Home) -> None:
    home.cursors_dir.mkdir()
    (home.cursors_dir / "s.json").write_text('{"k": 12}')
    store = CursorStore(home)
    assert store.advance("s", "k", 3, T1)
    assert store.get("s", "k") == CursorEntry(3, T1)


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2]", b"12", b"\xff", b"null"])
def test_unparseable_cursor_file_reads_empty_and_is_overwritten(home: Home, content: bytes) -> None:
    home.cursors_dir.mkdir()
    path = home.cursors_dir / "s.json"
    path.write_bytes(content)
    store = CursorStore(home)
    assert store.load("s") == {}
    assert store.advance("s", "k", 2, T1)
    assert json.loads(path.read_bytes()) == {"k": {"seq": 2, "created": T1}}


def test_malformed_cursor_entries_are_dropped(home: Home) -> None:
    home.cursors_dir.mkdir()
    (home.cursors_dir / "s.json").write_text('{"good": {"seq": 3, "created": 1}, "bad": "x", "neg": -1}')
    assert CursorStore(home).load("s") == {"good": CursorEntry(3, 1)}


def test_unreadable_cursor_file_reads_empty_but_is_not_clobbered(home: Home) -> None:
    home.cursors_dir.mkdir()
    (home.cursors_dir / "s.json").mkdir()  # EISDIR on read
    store = CursorStore(home)
    assert store.load("s") == {}
    assert store.get("s", "k") is None
    with pytest.raises(OSError):
        store.advance("s", "k", 1, 0)
    with pytest.raises(OSError):
        store.seed("s", "k", 1, 0)
    assert (home.cursors_dir / "s.json").is_dir()


def test_cursor_files_are_not_cached(home: Home) -> None:
    store = CursorStore(home)
    store.advance("s", "k", 5, T1)
    (home.cursors_dir / "s.json").write_text('{"k": {"seq": 9, "created": 1}}')
    assert store.get("s", "k") == CursorEntry(9, 1)
    remove_logout_files(home)
    assert store.load("s") == {}
    assert store.advance("s", "k", 1, T1)  # recreates cursors/


def test_sessions_have_separate_files(home: Home) -> None:
    store = CursorStore(home)
    store.advance("a", "k", 1, 0)
    store.advance("b", "k", 2, 0)
    assert store.get("a", "k") == CursorEntry(1, 0)
    assert store.get("b", "k") == CursorEntry(2, 0)
    assert listing(home.cursors_dir) == ["a.json", "b.json"]


def test_seed_only_when_there_is_no_entry(home: Home) -> None:
    store = CursorStore(home)
    assert not store.seed("s", "k", 0, T1)  # empty stream: nothing stored
    assert not home.cursors_dir.exists()
    assert store.seed("s", "k", 7, T1)
    assert store.get("s", "k") == CursorEntry(7, T1)
    assert not store.seed("s", "k", 9, T2)
    assert store.get("s", "k") == CursorEntry(7, T1)


def test_cursor_write_failure_keeps_the_file(monkeypatch: pytest.MonkeyPatch, home: Home) -> None:
    store = CursorStore(home)
    store.advance("s", "k", 1, T1)

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.advance("s", "k", 2, T1)
    monkeypatch.undo()
    assert store.get("s", "k") == CursorEntry(1, T1)
    assert listing(home.cursors_dir) == ["s.json"]


def test_home_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import ppz.home; "
        "bad = [m for m in ('orjson', 'pykka', 'nats', 'requests', 'hypothesis') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
