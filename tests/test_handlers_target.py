"""Target resolution for Send and SendBatch (spec/ipc.md §7.11; behaviours 6, 15, 41), cold and warm.

The cold resolution asks the state actor, lists sources and looks streams up (on a request
thread); the warm one (``warm=True``, on the event loop) reads published snapshots only and
answers None wherever the cold one would need more. Where the warm mode answers, it must answer
what the cold one does in the same world; where it does not, the request goes to a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from sendworld import EXP, SESSION, World, batch_params, module_nats, send_params, world_fixture  # noqa: F401

from ppz import errors, names
from ppz import jetstream as js
from ppz.handlers.target import Target, resolve_target
from ppz.home import Credentials
from ppz.messages import RefreshView


def resolve(w: World, *, warm: bool = False, **fields: Any) -> Target | None:
    if warm:
        return resolve_target(w.system, send_params(**fields), warm=True)
    return resolve_target(w.system, send_params(**fields))


def failure(w: World, **fields: Any) -> tuple[str, str]:
    with pytest.raises(errors.PpzError) as caught:
        resolve(w, **fields)
    return caught.value.code, caught.value.message


def collared(w: World, manifold: str, handle: str, pipe: str, sender: str = "") -> Target:
    return Target(acct=w.acct, subject=names.subject(w.acct, manifold, handle, pipe),
                  stream=names.stream_name(w.acct, manifold, handle, pipe), handle=handle, pipe=pipe,
                  sender=sender, view=w.view)


# --- the cold resolution (the rules) -------------------------------------------------------------------


def test_an_explicit_known_handle_needs_no_server_call_and_makes_the_next_resolution_warm(world: World) -> None:
    world.know("bob")
    world.create("", "bob", "inbox")
    assert resolve(world, warm=True, handle="bob") is None  # never looked up yet
    assert resolve(world, handle="bob") == collared(world, "", "bob", "inbox")
    assert world.asked() == ["session", "is_known", "manifold"]
    world.forget_calls()
    assert resolve(world, warm=True, handle="bob") == collared(world, "", "bob", "inbox")
    assert world.asked() == []


def test_a_dotless_target_is_the_uncollared_pipe_if_it_exists_else_the_source_inbox(world: World) -> None:
    world.session(namespace="team-a")
    room = world.create("team-a", "", "room")
    world.know("bob")
    world.create("", "bob", "inbox")
    world.know("carol")  # a source whose inbox has no stream
    assert resolve(world, handle="room", bare_target="room") == Target(
        acct=world.acct, subject=f"{world.acct}.team-a.room", stream=room, handle="", pipe="room", sender="",
        view=world.view)
    assert resolve(world, handle="bob", bare_target="bob") == collared(world, "", "bob", "inbox")
    assert failure(world, handle="ghost", bare_target="ghost") == (errors.E_SOURCE_NOT_FOUND,
                                                                   "source 'ghost' not found")
    assert failure(world, handle="carol", bare_target="carol") == (errors.E_PIPE_NOT_FOUND,
                                                                   "pipe 'inbox' not found on source 'carol'")


def test_the_current_handle_is_checked_with_the_server_every_time_and_forgotten_once_gone(world: World) -> None:
    world.know("bob")
    world.create("", "bob", "inbox")
    world.session(current="bob")
    assert resolve(world) == collared(world, "", "bob", "inbox", sender="bob")
    assert world.asked().count("list_sources") == 1  # although "bob" is known
    world.listed.clear()  # the source was destroyed elsewhere
    assert failure(world)[0] == errors.E_NO_CURRENT_SOURCE  # not E_SOURCE_NOT_FOUND
    assert world.state.session(SESSION).current == ""
    assert "set_current" in world.asked()
    assert failure(world)[0] == errors.E_NO_CURRENT_SOURCE


def test_a_handle_not_known_yet_is_looked_up_on_the_server_once(world: World) -> None:
    world.know("ops", "team-a")
    world.publish_state(known=frozenset(), manifolds={})  # listed by the server, not cached yet
    world.create("team-a", "ops", "notes")
    assert resolve(world, handle="ops", channel="notes") == collared(world, "team-a", "ops", "notes")
    assert resolve(world, handle="ops", channel="notes") == collared(world, "team-a", "ops", "notes")
    assert world.asked().count("list_sources") == 1
    assert failure(world, handle="ghost") == (errors.E_SOURCE_NOT_FOUND, "source 'ghost' not found")


def test_invalid_pipe_names_fail_before_any_server_call_or_lookup(world: World) -> None:
    world.know("bob")
    assert failure(world, handle="bob", channel="No!") == (errors.E_INVALID_PIPE,
                                                           errors.PpzError(errors.E_INVALID_PIPE).message)
    assert failure(world, handle="No!", bare_target="No!") == (errors.E_INVALID_PIPE,
                                                               errors.pipe_name_invalid("No!").message)
    assert world.asked() == ["session", "session"]


def test_the_sender_is_the_hint_else_the_current_handle_else_empty(world: World) -> None:
    world.know("bob")
    world.create("", "bob", "inbox")
    assert resolve(world, handle="bob").sender == ""  # type: ignore[union-attr]
    world.session(current="bob")
    assert resolve(world, handle="bob").sender == "bob"  # type: ignore[union-attr]
    assert resolve(world, handle="bob", sender="agent-7").sender == "agent-7"  # type: ignore[union-attr]
    assert resolve_target(world.system, batch_params(handle="bob")).sender == "bob"  # SendBatch: no hint


def test_the_login_gate_comes_first_and_the_account_id_must_be_a_uuid(world: World) -> None:
    creds = world.state.creds
    assert creds is not None
    world.publish_state(creds=None)
    assert failure(world, handle="bob")[0] == errors.E_NOT_LOGGED_IN
    world.publish_state(creds=Credentials(url=creds.url, api_key=creds.api_key, account_id="not-a-uuid"))
    assert failure(world, handle="bob") == (errors.E_INTERNAL, "bad account id")
    assert world.asked() == []


@pytest.mark.parametrize(("jserror", "code", "reported"), [
    (js.JsError(js.TRANSPORT, "timeout", timeout=True), errors.E_NATS_UNREACHABLE, True),
    (js.JsError(js.TRANSPORT, "connection closed"), errors.E_NATS_UNREACHABLE, False),
    (js.JsError("other", "bad request"), errors.E_INVALID_PIPE, False),
], ids=["timeout", "transport", "other"])
@pytest.mark.parametrize("bare", [False, True], ids=["collared", "uncollared"])
def test_a_failed_lookup_is_classified_and_a_timeout_reports_the_failure(
        world: World, monkeypatch: pytest.MonkeyPatch, jserror: js.JsError, code: str, reported: bool,
        bare: bool) -> None:
    world.know("bob")

    async def failing(nc: Any, stream: str) -> Any:
        raise jserror

    monkeypatch.setattr(js, "stream_info", failing)
    assert failure(world, handle="bob", bare_target="bob" if bare else "")[0] == code
    assert world.system.nats.report_failure.called is reported


# --- the warm mode --------------------------------------------------------------------------------------


def collision(w: World) -> dict[str, Any]:
    """``ppz send bob`` where source bob lives in the session's namespace: no uncollared ``bob``
    can exist there, so the warm mode takes the collared reading without a lookup."""
    w.know("bob", "team-a")
    w.session(namespace="team-a")
    w.create("team-a", "bob", "inbox")
    return {"handle": "bob", "bare_target": "bob"}


def explicit(w: World) -> dict[str, Any]:
    w.know("bob")
    w.create("", "bob", "notes")
    return {"handle": "bob", "channel": "notes", "sender": "agent-7"}


def uncollared(w: World) -> dict[str, Any]:
    w.session(namespace="team-a", current="bob")
    w.create("team-a", "", "room")
    return {"handle": "room", "bare_target": "room"}


def namespaced(w: World) -> dict[str, Any]:
    w.know("ops", "team-a")
    w.create("team-a", "ops", "inbox")
    return {"handle": "ops"}


@pytest.mark.parametrize("setup", [explicit, uncollared, namespaced, collision])
def test_the_warm_mode_answers_what_the_cold_one_does_without_asking_anyone(
        world: World, setup: Callable[[World], dict[str, Any]]) -> None:
    fields = setup(world)
    cold = resolve(world, **fields)
    world.forget_calls()
    assert resolve(world, warm=True, **fields) == cold
    assert world.asked() == [] and not world.system.state.actor_ref.tell.called


def looked_up(w: World, fields: dict[str, Any]) -> dict[str, Any]:
    """Run the cold resolution first, so the streams it finds are seen."""
    resolve(w, **fields)
    return fields


def implicit(w: World) -> dict[str, Any]:
    """The current handle: the server is asked every time (ipc.md §7.11 step 4)."""
    w.session(current="bob")
    return looked_up(w, {**explicit(w), "handle": ""})


def unknown(w: World) -> dict[str, Any]:
    """A handle the caches do not know (yet, or any more)."""
    fields = looked_up(w, explicit(w))
    w.publish_state(known=frozenset())
    return fields


def not_looked_up(w: World) -> dict[str, Any]:
    return explicit(w)


def logged_out(w: World) -> dict[str, Any]:
    fields = looked_up(w, explicit(w))
    w.publish_state(creds=None)
    return fields


def refresh_due(w: World) -> dict[str, Any]:
    """ensure-NATS would refresh the credential first."""
    fields = looked_up(w, explicit(w))
    w.system.refresh_box.value = RefreshView(exchanged=True, exp=EXP, generation=2)
    return fields


def swapped(w: World) -> dict[str, Any]:
    """The stream was seen on a connection that has since been replaced."""
    fields = looked_up(w, explicit(w))
    w.system.nats_box.value = replace(w.view, nc_id="nc-next")
    return fields


def bad_pipe(w: World) -> dict[str, Any]:
    return {**looked_up(w, explicit(w)), "channel": "No!"}


def dotless_elsewhere(w: World) -> dict[str, Any]:
    """``ppz send bob`` where source bob lives outside the session's namespace: an uncollared
    ``bob`` could exist here, and only a lookup can tell."""
    w.know("bob", "team-b")
    w.session(namespace="team-a")
    w.create("team-b", "bob", "inbox")
    return looked_up(w, {"handle": "bob", "bare_target": "bob"})


@pytest.mark.parametrize("setup", [implicit, unknown, not_looked_up, logged_out, refresh_due, swapped, bad_pipe,
                                   dotless_elsewhere])
def test_the_warm_mode_answers_none_where_the_cold_one_needs_more_and_asks_no_one(
        world: World, setup: Callable[[World], dict[str, Any]]) -> None:
    fields = setup(world)
    world.forget_calls()
    assert resolve(world, warm=True, **fields) is None
    assert world.asked() == [] and not world.system.state.actor_ref.tell.called
