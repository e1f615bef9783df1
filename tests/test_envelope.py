"""The envelope codec (spec/nats.md §5) and ReadMessage (ipc.md §3)."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppz.envelope import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    EnvelopeError,
    check_size,
    effective_priority,
    encode_checked,
    envelope_time,
    new_envelope,
    read_message,
    second_precision,
)
from ppz.errors import E_PAYLOAD_TOO_LARGE, PpzError

FIELDS = ("id", "sender", "subject", "payload", "created_at", "in_reply_to", "ack_requested", "priority")
SAMPLE = Envelope(
    id="6f1d2c3b-9a8e-4f70-b1c2-d3e4f5a6b7c8",
    sender="alice",
    subject="status",
    payload="build is green",
    created_at="2026-05-01T12:00:00.123456Z",
    in_reply_to="",
    ack_requested=True,
    priority=1,
)

envelopes = st.builds(
    Envelope,
    id=st.text(),
    sender=st.text(),
    subject=st.text(),
    payload=st.text(),
    created_at=st.text(),
    in_reply_to=st.text(),
    ack_requested=st.booleans(),
    priority=st.integers(min_value=0, max_value=3),
    schedule_id=st.text(),
)


def test_encode_is_exact_compact_json_in_field_order() -> None:
    assert SAMPLE.encode() == (
        b'{"id":"6f1d2c3b-9a8e-4f70-b1c2-d3e4f5a6b7c8","sender":"alice","subject":"status",'
        b'"payload":"build is green","created_at":"2026-05-01T12:00:00.123456Z","in_reply_to":"",'
        b'"ack_requested":true,"priority":1}'
    )


def test_empty_envelope_still_writes_all_eight_fields() -> None:
    assert Envelope().encode() == (
        b'{"id":"","sender":"","subject":"","payload":"","created_at":"","in_reply_to":"",'
        b'"ack_requested":false,"priority":0}'
    )


def test_schedule_id_is_written_only_when_present() -> None:
    assert b"schedule_id" not in SAMPLE.encode()
    with_schedule = dataclasses.replace(SAMPLE, schedule_id="a1b2c3d4")
    assert with_schedule.encode().endswith(b'"priority":1,"schedule_id":"a1b2c3d4"}')


def test_non_ascii_is_utf8_not_escaped() -> None:
    data = Envelope(payload="é", sender="ünï", subject="日本").encode()
    assert '"payload":"é"'.encode() in data
    assert "日本".encode() in data
    assert b"\\u" not in data


def test_encoding_matches_stdlib_compact_json() -> None:
    env = Envelope(payload='quote " backslash \\ tab \t nl \n ctl \x01 del \x7f </> & \u2028 😀')
    expected = json.dumps(env.to_json(), ensure_ascii=False, separators=(",", ":")).encode()
    assert env.encode() == expected


def test_lone_surrogates_become_replacement_characters() -> None:
    env = Envelope(payload="a\udcffb")
    assert Envelope.decode(env.encode()).payload == "a\ufffdb"


@given(envelopes)
def test_round_trip(env: Envelope) -> None:
    assert Envelope.decode(env.encode()) == env
    assert Envelope.from_json(json.loads(env.encode())) == env


@given(envelopes)
def test_encoding_is_always_compact_stdlib_json(env: Envelope) -> None:
    assert env.encode() == json.dumps(env.to_json(), ensure_ascii=False, separators=(",", ":")).encode()


def test_decode_ignores_unknown_fields() -> None:
    body = b'{"id":"x","handle":"legacy","extra":{"nested":[1,2]},"payload":"hi"}'
    assert Envelope.decode(body) == Envelope(id="x", payload="hi")


def test_decode_defaults_missing_fields() -> None:
    assert Envelope.decode(b"{}") == Envelope()
    assert Envelope.decode('{"sender":"bob"}') == Envelope(sender="bob")


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":5,"sender":null,"subject":["x"],"payload":{"a":1},"created_at":1.5,"in_reply_to":true,'
        b'"ack_requested":"yes","priority":"1","schedule_id":7}',
        b'{"ack_requested":1,"priority":true}',
        b'{"priority":1.0}',
    ],
)
def test_decode_turns_wrong_types_into_empty(body: bytes) -> None:
    assert Envelope.decode(body) == Envelope()


@pytest.mark.parametrize("priority", [-1, 4, 99, 2**70])
def test_out_of_range_priority_reads_as_unset_medium(priority: int) -> None:
    env = Envelope.decode(json.dumps({"priority": priority}).encode())
    assert env.priority == 0
    assert effective_priority(env.priority) == 2


@pytest.mark.parametrize(("priority", "tier"), [(0, 2), (1, 1), (2, 2), (3, 3), (-1, 2), (4, 2)])
def test_effective_priority(priority: int, tier: int) -> None:
    assert effective_priority(priority) == tier


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"null", b"42", b"true", b"", b"{", b"not json", b"\xff"])
def test_non_object_body_is_undecodable(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.decode(body)
    assert issubclass(EnvelopeError, ValueError)


def test_from_json_rejects_non_objects() -> None:
    with pytest.raises(EnvelopeError, match="not a JSON object"):
        Envelope.from_json(["id"])


def _with_encoded_size(size: int) -> Envelope:
    base = len(Envelope().encode())
    return Envelope(payload="x" * (size - base))


def test_size_cap_is_on_the_encoded_bytes() -> None:
    exact = _with_encoded_size(MAX_ENVELOPE_BYTES)
    assert len(encode_checked(exact)) == 65536
    over = _with_encoded_size(MAX_ENVELOPE_BYTES + 1)
    with pytest.raises(PpzError) as info:
        encode_checked(over)
    assert info.value.code == E_PAYLOAD_TOO_LARGE
    assert info.value.exit_status == 17


@pytest.mark.parametrize("two_byte_char", ["é", "\n", '"'])
def test_size_cap_counts_utf8_bytes_and_escapes(two_byte_char: str) -> None:
    room = MAX_ENVELOPE_BYTES - len(Envelope().encode())
    payload = two_byte_char * (room // 2) + "x" * (room % 2)
    assert len(encode_checked(Envelope(payload=payload))) == MAX_ENVELOPE_BYTES
    with pytest.raises(PpzError):
        encode_checked(Envelope(payload=payload + "x"))


def test_check_size_passes_small_bodies_through() -> None:
    assert check_size(b"{}") == b"{}"
    with pytest.raises(PpzError):
        check_size(b" " * (MAX_ENVELOPE_BYTES + 1))


def test_new_envelope() -> None:
    env = new_envelope(
        sender="alice", subject="s", payload="hi", in_reply_to="r", ack_requested=True, priority=3
    )
    assert str(uuid.UUID(env.id)) == env.id
    assert uuid.UUID(env.id).version == 4
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", env.created_at)
    assert (env.sender, env.subject, env.payload, env.in_reply_to) == ("alice", "s", "hi", "r")
    assert (env.ack_requested, env.priority, env.schedule_id) == (True, 3, "")
    assert new_envelope().id != new_envelope().id


@pytest.mark.parametrize(
    ("clock", "created_at"),
    [
        ("2026-05-01T12:00:00Z", "2026-05-01T12:00:00.000000Z"),
        ("2026-05-01T14:00:00.5+02:00", "2026-05-01T12:00:00.500000Z"),
        ("2026-05-01T12:00:00.123456789Z", "2026-05-01T12:00:00.123456Z"),
    ],
)
def test_test_clock_sets_created_at(clock: str, created_at: str) -> None:
    assert new_envelope(payload="x", test_clock=clock).created_at == created_at
    assert envelope_time(clock) == created_at


@pytest.mark.parametrize("clock", [None, "", "yesterday"])
def test_missing_or_bad_test_clock_uses_now(clock: str | None) -> None:
    assert envelope_time(clock).startswith(("20", "21"))
    assert envelope_time(clock) != "yesterday"


def test_read_message_shape() -> None:
    assert read_message(SAMPLE) == {
        "id": "6f1d2c3b-9a8e-4f70-b1c2-d3e4f5a6b7c8",
        "sender": "alice",
        "subject": "status",
        "payload": "build is green",
        "created_at": "2026-05-01T12:00:00Z",
        "in_reply_to": "",
        "ack_requested": True,
        "priority": 1,
    }
    assert list(read_message(SAMPLE)) == list(FIELDS)


def test_read_message_always_has_the_eight_fields_and_schedule_id_only_when_set() -> None:
    assert list(read_message(Envelope())) == list(FIELDS)
    assert read_message(Envelope(schedule_id="a1b2c3d4"))["schedule_id"] == "a1b2c3d4"


@pytest.mark.parametrize(
    ("created_at", "shown"),
    [
        ("2026-05-01T12:00:00.999999Z", "2026-05-01T12:00:00Z"),
        ("2026-05-01T12:00:59.123456789Z", "2026-05-01T12:00:59Z"),
        ("2026-05-01T12:00:00Z", "2026-05-01T12:00:00Z"),
        ("2026-05-01T14:00:00.5+02:00", "2026-05-01T12:00:00Z"),
        ("2026-05-01T00:00:00-01:00", "2026-05-01T01:00:00Z"),
        ("", ""),
        ("not a time", "not a time"),
    ],
)
def test_read_message_created_at_is_utc_second_precision(created_at: str, shown: str) -> None:
    assert second_precision(created_at) == shown
    assert read_message(Envelope(created_at=created_at))["created_at"] == shown


def test_envelope_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SAMPLE.payload = "changed"  # type: ignore[misc]
