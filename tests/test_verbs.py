"""The verb table and ``check_params`` (spec/ipc.md §2, §6, §7, §8; behaviours 3–5)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppz import errors
from ppz.verbs import BOOL, INT, OPT_INT, RESERVED, SCHEMAS, STR, STRS, check_params, check_session

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NO_SESSION = {"Login", "Logout", "Diag", "Who", "Complete"}


def protocol_error(method: str, params: dict[str, Any]) -> str:
    """``check_params``'s E_PROTOCOL message for ``params``."""
    with pytest.raises(errors.PpzError) as caught:
        check_params(method, params)
    assert caught.value.code == errors.E_PROTOCOL
    return caught.value.message


# --- the table ----------------------------------------------------------------------------------------


def test_every_verb_of_the_contract_has_a_schema() -> None:
    assert set(SCHEMAS) == {
        "Status", "Login", "Logout", "Create", "EnsurePTY", "Connect", "Switch", "Disconnect",
        "SetNamespace", "UnsetNamespace", "Send", "SendBatch", "Read", "List", "ListWatch",
        "PipeCreate", "PipeSet", "PipeDestroy", "SourceDestroy", "Diag", "Who", "Complete",
    }
    assert RESERVED.isdisjoint(SCHEMAS)


def test_only_five_verbs_carry_no_session() -> None:
    assert {verb for verb, schema in SCHEMAS.items() if "session" not in schema} == NO_SESSION


# --- defaults -----------------------------------------------------------------------------------------


def test_absent_fields_read_as_typed_empty_values() -> None:
    assert check_params("Send", {}) == {
        "handle": "", "channel": "", "bare_target": "", "payload": "", "msg_subject": "",
        "in_reply_to": "", "ack_requested": False, "priority": 0, "sender": "", "session": "",
    }
    assert check_params("SendBatch", {}) == {"handle": "", "channel": "", "bare_target": "",
                                             "payloads": [], "session": ""}
    assert check_params("Who", {}) == {}


def test_null_fields_read_like_absent_ones() -> None:
    params = {name: None for name in SCHEMAS["Read"]}
    assert check_params("Read", params) == check_params("Read", {})


def test_present_values_are_kept() -> None:
    params = {"handle": "bob", "channel": "notes", "payload": "hi", "ack_requested": True,
              "priority": 3, "session": "sid-1"}
    typed = check_params("Send", params)
    assert {k: typed[k] for k in params} == params


@pytest.mark.parametrize("verb", sorted(SCHEMAS))
def test_every_verb_accepts_an_empty_request(verb: str) -> None:
    assert set(check_params(verb, {})) == set(SCHEMAS[verb])


def test_unknown_fields_are_dropped() -> None:
    assert check_params("Status", {"session": "s", "bogus": {"x": [1]}, "jsonrpc": "2.0"}) == {"session": "s"}


# --- types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(("verb", "field"), [("Send", "priority"), ("Read", "head_limit"),
                                             ("Diag", "since_unix"), ("PipeCreate", "ttl_seconds")])
def test_a_bool_is_not_an_integer(verb: str, field: str, value: bool) -> None:
    assert repr(field) in protocol_error(verb, {field: value})


@pytest.mark.parametrize("value", [0, 1, "true", "", [True]])
def test_only_true_and_false_are_booleans(value: object) -> None:
    assert "'follow'" in protocol_error("Read", {"follow": value})


@pytest.mark.parametrize("value", [INT64_MIN, -1, 0, 1, INT64_MAX])
@pytest.mark.parametrize(("verb", "field"), [("Diag", "since_unix"), ("PipeSet", "max_bytes")])
def test_integers_cover_the_64_bit_range(verb: str, field: str, value: int) -> None:
    assert check_params(verb, {field: value})[field] == value


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 2**100])
@pytest.mark.parametrize(("verb", "field"), [("Diag", "since_unix"), ("PipeSet", "max_bytes")])
def test_integers_outside_64_bits_are_refused(verb: str, field: str, value: int) -> None:
    assert repr(field) in protocol_error(verb, {field: value})


@pytest.mark.parametrize("value", [1.0, 1.5, "1", [1], {"n": 1}])
def test_integers_must_be_json_integers(value: object) -> None:
    assert "'priority'" in protocol_error("Send", {"priority": value})


@pytest.mark.parametrize("value", [1, True, ["a"], {"s": "a"}])
def test_strings_must_be_strings(value: object) -> None:
    assert "'handle'" in protocol_error("Create", {"handle": value})


@pytest.mark.parametrize("payloads", [[], ["a"], ["a", "", "ü" * 10]])
def test_payloads_is_an_array_of_strings(payloads: list[str]) -> None:
    assert check_params("SendBatch", {"payloads": payloads})["payloads"] == payloads


@pytest.mark.parametrize("payloads", ["a", ["a", 1], [None], [["a"]], {"0": "a"}, 5])
def test_payloads_that_are_not_an_array_of_strings_are_refused(payloads: object) -> None:
    assert "'payloads'" in protocol_error("SendBatch", {"payloads": payloads})


@pytest.mark.parametrize("verb", ["PipeCreate", "PipeSet"])
def test_retention_fields_stay_unset_when_absent_or_null(verb: str) -> None:
    absent = check_params(verb, {"name": "notes"})
    null = check_params(verb, {"name": "notes", "ttl_seconds": None, "max_msgs": None, "max_bytes": None})
    for typed in (absent, null):
        assert (typed["ttl_seconds"], typed["max_msgs"], typed["max_bytes"]) == (None, None, None)


@pytest.mark.parametrize("verb", ["PipeCreate", "PipeSet"])
def test_retention_fields_keep_zero_and_negative_values(verb: str) -> None:
    typed = check_params(verb, {"ttl_seconds": 0, "max_msgs": -1, "max_bytes": 1024})
    assert (typed["ttl_seconds"], typed["max_msgs"], typed["max_bytes"]) == (0, -1, 1024)


@pytest.mark.parametrize("value", [False, "0", 0.5])
def test_retention_fields_are_typed_too(value: object) -> None:
    assert "'max_msgs'" in protocol_error("PipeCreate", {"max_msgs": value})


# --- methods and sessions -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["Frobnicate", "status", "Subscribe2", ""])
def test_an_unknown_method_is_a_protocol_error_naming_it(method: str) -> None:
    assert protocol_error(method, {}) == f"unknown method {method}"


@pytest.mark.parametrize("verb", ["SubsList", "SubsAdd", "SubsRemove", "SubsWait", "ScheduleCreate",
                                  "ScheduleList", "ScheduleRemove", "ACL", "Subscribe"])
def test_reserved_verbs_are_not_implemented(verb: str) -> None:
    assert verb in RESERVED
    with pytest.raises(errors.PpzError) as caught:
        check_params(verb, {"session": "../x", "bogus": 1})
    assert (caught.value.code, caught.value.message) == (errors.E_NOT_IMPLEMENTED, f"{verb} not implemented")


@pytest.mark.parametrize("session", ["../x", ".", "..", "a/b", "/", "a\x00b", "\x00"], ids=repr)
def test_a_session_that_cannot_name_a_file_is_refused(session: str) -> None:
    for verb in ("Status", "Read", "PipeCreate"):
        assert protocol_error(verb, {"session": session}) == f"invalid session '{session}'"
    with pytest.raises(errors.PpzError):
        check_session(session)


@pytest.mark.parametrize("session", ["", "default", "sid-48213", "a.b", "...", ".hidden", "x..y", "é"])
def test_other_sessions_are_accepted_verbatim(session: str) -> None:
    assert check_params("Disconnect", {"session": session}) == {"session": session}


@pytest.mark.parametrize("verb", sorted(NO_SESSION))
def test_verbs_without_a_session_ignore_a_bad_one(verb: str) -> None:
    assert "session" not in check_params(verb, {"session": "../../etc/passwd"})


# --- properties ---------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=6,
)


def valid_for(kind: str, value: object) -> bool:
    if value is None:
        return True
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind in (INT, OPT_INT):
        return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    assert kind == STRS
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


@given(verb=st.sampled_from(sorted(SCHEMAS)), data=st.data())
def test_any_json_params_are_either_typed_or_a_protocol_error(verb: str, data: st.DataObject) -> None:
    schema = SCHEMAS[verb]
    names = sorted(schema) + ["unknown"]
    params = data.draw(st.dictionaries(st.sampled_from(names), JSON, max_size=4))
    expect_ok = all(valid_for(schema[k], v) for k, v in params.items() if k in schema)
    try:
        typed = check_params(verb, params)
    except errors.PpzError as exc:
        assert exc.code == errors.E_PROTOCOL
        session = params.get("session")
        wait_ms = params.get("wait_ms")
        assert (not expect_ok or (isinstance(session, str) and exc.message.startswith("invalid session"))
                or (verb == "Read" and isinstance(wait_ms, int) and wait_ms < -1 and exc.message == "invalid wait_ms"))
        return
    assert expect_ok
    assert set(typed) == set(schema)
    for name, kind in schema.items():
        value = params.get(name)
        if value is not None:
            assert typed[name] == value
        elif kind == OPT_INT:
            assert typed[name] is None
        else:
            assert typed[name] == {STR: "", BOOL: False, INT: 0, STRS: []}[kind]
