"""The console over real HTTP against a real ppz-server and nats-server: sign-in and sessions,
the overview, pipe pages with paging, the live tail, the send box, keys, and the security
rules (no session, other accounts, CSRF and Origin, escaping)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import markupsafe
import pytest
from consoletestkit import Account, Console, EventReader, new_console_account
from server_testkit import js_api, nats_connect
from serverfixture import ServerProcess

from ppz import names
from ppz.server import trust
from ppz.server.console.feed import reader_permissions
from ppz.server.store import Store

XSS_CORPUS = [
    "<script>alert('xss')</script>",
    '"><img src=x onerror=alert(1)>',
    "<svg/onload=alert(2)>",
    "javascript:alert(3)",
    "</li></ol><iframe src=javascript:alert(4)>",
    "{{ 7*7 }} {% raw %}",
    "\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J",
    "<style>body{display:none}</style>",
    "&lt;already-escaped&gt; &amp;",
]


def envelope(payload: str, sender: str = "bob", subject: str = "", priority: int = 0, **extra: object) -> dict:
    return {"id": f"id-{abs(hash(payload)) % 10**8:08d}", "sender": sender, "subject": subject, "payload": payload,
            "created_at": "2026-05-01T12:00:00Z", "in_reply_to": "", "ack_requested": False,
            "priority": priority, **extra}


def stream_messages(account: Account, stream: str) -> int:
    info = js_api(account.server, account.api, f"STREAM.INFO.{stream}")
    return int(info["state"]["messages"])


# --- sign in, sessions -------------------------------------------------------------------


def test_without_a_session_pages_redirect_and_streams_are_401(console_server: ServerProcess) -> None:
    anonymous = Console(console_server)
    for path in ("/ui/", "/ui/pipes/bob.inbox", "/ui/keys"):
        resp = anonymous.get(path)
        assert resp.status_code == 303, path
        assert resp.headers["location"] == "/ui/login"
    for path in ("/ui/pipes/bob.inbox/events", "/ui/events"):
        assert anonymous.get(path).status_code == 401, path
    assert anonymous.post("/ui/send", {"to": "bob", "as": "bob", "message": "x", "csrf": "x"}).status_code == 401
    assert anonymous.post("/ui/keys/revoke", {"key": "1", "csrf": "x"}).status_code == 401
    assert anonymous.get("/ui/login").status_code == 200
    assert anonymous.get("/ui").headers["location"] == "/ui/"


def test_sign_in_sets_a_strict_httponly_cookie_and_never_shows_the_key(account: Account) -> None:
    console = Console(account.server)
    bad = console.post("/ui/login", {"api_key": "ppz_" + "0" * 26})
    assert bad.status_code == 401 and "invalid api key" in bad.text
    assert "set-cookie" not in bad.headers
    assert console.post("/ui/login", {"api_key": "not-a-key"}).status_code == 401

    resp = console.login(account.key)
    assert resp.headers["location"] == "/ui/"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("ppz_console=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; set over TLS
    assert account.key not in cookie and account.key[4:] not in cookie
    pages = [console.get(p).text for p in ("/ui/", "/ui/pipes/bob.inbox", "/ui/keys")]
    for text in pages:
        assert account.key not in text and account.key[12:] not in text
    assert account.key not in account.server.log_text()


def test_sign_out_ends_the_session(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    cookie = console.http.cookies.get("ppz_console")
    resp = console.post("/ui/logout", {"csrf": console.csrf})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/login"
    assert console.get("/ui/").status_code == 303
    # The old cookie is dead on the server, not only deleted in this browser.
    replay = Console(account.server)
    replay.http.cookies.set("ppz_console", cookie, path="/ui")
    assert replay.get("/ui/").status_code == 303


def test_revoking_the_key_ends_its_sessions(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    other = Console(account.server)
    prefix = account.key[4:12]
    out = subprocess.run([sys.executable, "-m", "ppz.server.cli", "keys", "revoke", prefix],
                         env=account.server.env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert console.get("/ui/").status_code == 303
    assert console.get("/ui/pipes/bob.inbox/events").status_code == 401
    assert other.post("/ui/login", {"api_key": account.key}).status_code == 401


def test_keys_page_lists_and_revokes_keys_of_this_account_only(console_server: ServerProcess) -> None:
    a = new_console_account(console_server)
    b = new_console_account(console_server)
    console = Console(console_server)
    console.login(a.key)
    page = console.get("/ui/keys").text
    assert a.key[4:12] in page and b.key[4:12] not in page
    # Another account's key id is not found, whatever its number.
    b_console = Console(console_server)
    b_console.login(b.key)
    b_page = b_console.get("/ui/keys").text
    b_id = b_page.split('name="key" value="')[1].split('"')[0]
    assert console.post("/ui/keys/revoke", {"key": b_id, "csrf": console.csrf}).status_code == 404
    assert b_console.get("/ui/").status_code == 200
    # Revoking one's own key signs out.
    a_id = page.split('name="key" value="')[1].split('"')[0]
    assert console.post("/ui/keys/revoke", {"key": a_id, "csrf": console.csrf}).status_code == 303
    assert console.get("/ui/").status_code == 303
    assert a.api.get("/api/v1/sources").status_code == 401


# --- overview, pipes, tail, send ----------------------------------------------------------


def test_overview_shows_sources_pipes_and_presence(account: Account) -> None:
    account.api.post("/api/v1/pipes", json={"name": "room", "manifold": "team-a"})
    account.api.post("/api/v1/sources/bob/pipes", json={"name": "notes"})
    account.publish("bob.inbox", envelope("hello overview", sender="agent"))
    beat = {"ts": "2026-05-01T12:00:00Z", "seq": 1, "harness": "claude", "agent_state": "working",
            "model": "m1", "hostname": "h1", "interval_sec": 60}
    account.publish("_presence.agent", envelope(json.dumps(beat), sender="agent"))
    console = Console(account.server)
    console.login(account.key)
    text = console.get("/ui/").text
    for name in ("bob.inbox", "bob.notes", "agent.stdout", "team-a.room"):
        assert f'data-pipe="{name}"' in text, name
    assert "agent.heartbeat" not in text
    row = text.split('data-pipe="bob.inbox"')[1].split("</tr>")[0]
    assert "<td>1</td>" in row and "hello overview" in row and "agent" in row
    presence = text.split('id="presence"')[1].split("</table>")[0]
    assert "agent" in presence and "claude" in presence and "offline" in presence  # an old beat
    sources = text.split('id="sources"')[1].split("</table>")[0]
    assert "<td>bob</td><td>message</td>" in sources and "<td>agent</td><td>pty</td>" in sources
    assert "room" in text.split('id="uncollared"')[1]


def test_presence_stream_sends_live_rows(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    reader = EventReader(console, "/ui/events")
    try:
        first = reader.wait(1)[0]
        assert first[0] == "presence"
        assert [r["status"] for r in first[2] if r["handle"] == "agent"] == ["offline"]
        from ppz.envelope import envelope_time

        beat = {"ts": envelope_time(), "seq": 2, "interval_sec": 60, "harness": "codex"}
        account.publish("_presence.agent", dict(envelope(json.dumps(beat), sender="agent"),
                                                created_at=envelope_time()))

        def online() -> bool:
            return any(r["handle"] == "agent" and r["status"] == "online"
                       for event, _, rows in reader.events if event == "presence" for r in rows)

        with reader.changed:
            assert reader.changed.wait_for(online, 10)
    finally:
        reader.close()


def test_overview_stream_sends_live_pipe_summaries(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    reader = EventReader(console, "/ui/events")

    def bob_inbox(event: tuple[str, str, Any]) -> dict[str, Any] | None:
        return next((r for r in event[2] if r["name"] == "bob.inbox"), None) if event[0] == "pipes" else None

    try:
        with reader.changed:
            assert reader.changed.wait_for(lambda: any(bob_inbox(e) for e in reader.events), 10)
        assert [bob_inbox(e) for e in reader.events if bob_inbox(e)][0]["total"] == 0
        account.publish("bob.inbox", envelope("<b>news</b>", sender="agent"))

        def updated() -> bool:
            return any((bob_inbox(e) or {}).get("total") == 1 for e in reader.events)

        with reader.changed:
            assert reader.changed.wait_for(updated, 20)
        row = next(bob_inbox(e) for e in reader.events if (bob_inbox(e) or {}).get("total") == 1)
        assert row is not None and row["preview"] == "<b>news</b>" and row["sender"] == "agent"
    finally:
        reader.close()


def test_pipe_page_renders_like_ppz_read_and_pages(account: Account) -> None:
    account.publish("bob.inbox", *[envelope(f"m{i}", sender="agent", subject="s" if i == 60 else "",
                                            priority=1 if i == 59 else 0) for i in range(1, 61)],
                    envelope("", sender="bob", subject="ack:read", in_reply_to="abcdef0123456789"))
    console = Console(account.server)
    console.login(account.key)
    text = console.get("/ui/pipes/bob.inbox").text
    seqs = [int(s) for s in text.split('data-seq="')[1:] for s in [s.split('"')[0]]]
    assert seqs == list(range(12, 62))
    assert '<span class="badge P1">P1</span>' in text.split('data-seq="59"')[1].split("</li>")[0]
    assert "[s]" in text.split('data-seq="60"')[1].split("</li>")[0]
    receipt = text.split('data-seq="61"')[1].split("</li>")[0]
    assert "receipt" in receipt and "ack:read → 23456789" in receipt
    older = text.split('id="older" href="')[1].split('"')[0]
    assert older == "/ui/pipes/bob.inbox?before=12"
    page2 = console.get(older).text
    assert [int(s.split('"')[0]) for s in page2.split('data-seq="')[1:]] == list(range(1, 12))
    assert 'id="older"' not in page2 and "data-events" not in page2.split('id="messages"')[1].split(">")[0]
    assert console.get("/ui/pipes/nope.inbox").status_code == 404


def test_live_tail_streams_new_messages_and_resumes(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    account.publish("bob.inbox", envelope("before"))
    reader = EventReader(console, "/ui/pipes/bob.inbox/events?after=1")
    try:
        account.publish("bob.inbox", envelope("live one", sender="agent", priority=3))
        assert console.send("bob.inbox", "from the page", as_="agent", subject="hi").status_code == 200
        events = reader.wait(2)
        assert [(e, i) for e, i, _ in events] == [("msg", "2"), ("msg", "3")]
        assert events[0][2]["payload"] == "live one" and events[0][2]["badge"] == "P3"
        assert events[1][2]["sender"] == "agent" and events[1][2]["subject"] == "hi"
    finally:
        reader.close()
    resumed = EventReader(console, "/ui/pipes/bob.inbox/events", headers={"Last-Event-ID": "2"})
    try:
        assert resumed.wait(1)[0][2]["payload"] == "from the page"
    finally:
        resumed.close()


def test_send_box_publishes_as_a_source_of_the_account(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    reply = console.send("bob", "to the inbox", as_="agent", subject="topic", priority="high")
    assert reply.status_code == 200 and reply.json() == {"seq": 1, "to": "bob.inbox"}
    page = console.get("/ui/pipes/bob.inbox").text
    assert "to the inbox" in page and "[topic]" in page and "P1" in page
    # Without JavaScript the form answers with a redirect to the pipe page.
    plain = console.post("/ui/send", {"to": "agent.stdin", "as": "bob", "message": "keys", "csrf": console.csrf})
    assert plain.status_code == 303 and plain.headers["location"] == "/ui/pipes/agent.stdin"
    assert console.send("bob", "x", priority="urgent").status_code == 400
    assert console.send("bob", "x", subject="ack:read").status_code == 400
    assert console.send("bob", "x", as_="nobody").status_code == 404
    assert console.send("nobody.inbox", "x").status_code == 404
    assert console.send("bob", "x" * 70000).status_code == 413
    acct = account.account_id
    assert stream_messages(account, names.stream_name(acct, "", "bob", "inbox")) == 1


# --- security -----------------------------------------------------------------------------


def test_the_console_reads_with_a_read_only_credential(account: Account) -> None:
    """The console's NATS user of an account may read streams but not publish on any data
    subject."""
    account.publish("bob.inbox", envelope("readable"))
    store = Store(account.server.data_dir / "ppz-server.db")
    try:
        tenant = store.account(account.account_id).tenant  # type: ignore[union-attr]
    finally:
        store.close()
    assert tenant is not None
    pub, sub = reader_permissions(account.account_id)
    cred = trust.mint_user(tenant, name="console-test", now=int(time.time()), ttl=60, pub_allow=pub, sub_allow=sub)
    stream = names.stream_name(account.account_id, "", "bob", "inbox")

    async def probe() -> tuple[int, str]:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats_connect(account.server.nats_url, cred.jwt, cred.seed, error_cb=on_error)
        try:
            js = nc.jetstream(timeout=2)
            count = (await js.stream_info(stream)).state.messages
            with pytest.raises(Exception):  # noqa: B017 - refused publish: no PubAck, whatever the error type
                await js.publish(f"{account.account_id}.bob.inbox", b'{"payload": "forged"}')
            await nc.flush()
            return count, " ".join(errors)
        finally:
            await nc.close()

    count, errors = asyncio.run(probe())
    assert count == 1
    assert "permissions violation" in errors.lower()
    assert stream_messages(account, stream) == 1


def test_server_stops_cleanly_with_open_streams(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        acct = new_console_account(server)
        console = Console(server)
        console.login(acct.key)
        readers = [EventReader(console, p) for p in ("/ui/pipes/bob.inbox/events", "/ui/events")]
        assert [r.status for r in readers] == [200, 200]
        readers[1].wait(1)
        assert server.stop() == 0  # and no nats-server left (stop() checks)
        for reader in readers:
            reader.close()
    finally:
        server.kill()




def test_a_session_cannot_reach_another_account(console_server: ServerProcess) -> None:
    a = new_console_account(console_server)
    b = new_console_account(console_server)
    b.api.post("/api/v1/pipes", json={"name": "secret"})
    b.api.post("/api/v1/sources", json={"handle": "bobb"})
    b.publish("secret", envelope("b's secret"))
    console = Console(console_server)
    console.login(a.key)
    assert console.get("/ui/pipes/secret").status_code == 404
    assert console.get("/ui/pipes/secret/events").status_code == 404
    assert console.get(f"/ui/pipes/{b.account_id}.secret").status_code == 404
    assert "secret" not in console.get("/ui/").text and "bobb" not in console.get("/ui/").text
    assert console.send("secret", "intrusion").status_code == 404
    assert console.send("bob", "as b's source", as_="bobb").status_code == 404
    # Same names in both accounts: each session sees and writes its own.
    b.publish("bob.inbox", envelope("b's bob"))
    assert console.send("bob", "a's bob").status_code == 200
    assert "b's bob" not in console.get("/ui/pipes/bob.inbox").text
    assert stream_messages(b, names.stream_name(b.account_id, "", "", "secret")) == 1
    assert stream_messages(b, names.stream_name(b.account_id, "", "bob", "inbox")) == 1


def test_posts_need_the_csrf_token_and_a_same_origin(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    base = {"to": "bob", "as": "bob", "message": "forged"}
    assert console.post("/ui/send", base).status_code == 403
    assert console.post("/ui/send", {**base, "csrf": "wrong"}).status_code == 403
    for origin in ("http://evil.example", "null", account.server.url.replace("127.0.0.1", "localhost")):
        resp = console.post("/ui/send", {**base, "csrf": console.csrf}, headers={"Origin": origin})
        assert resp.status_code == 403, origin
    assert console.post("/ui/send", {**base, "csrf": console.csrf},
                        headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert console.post("/ui/logout", {}).status_code == 403
    foreign = {"Origin": "http://evil.example"}
    assert console.post("/ui/login", {"api_key": account.key}, headers=foreign).status_code == 403
    assert console.get("/ui/").status_code == 200  # still signed in
    same = console.post("/ui/send", {**base, "message": "fine", "csrf": console.csrf},
                        headers={"Origin": account.server.url})
    assert same.status_code == 303
    assert stream_messages(account, names.stream_name(account.account_id, "", "bob", "inbox")) == 1


def test_event_streams_refuse_a_foreign_origin(account: Account) -> None:
    console = Console(account.server)
    console.login(account.key)
    for path in ("/ui/pipes/bob.inbox/events", "/ui/events"):
        assert console.get(path, headers={"Origin": "http://evil.example"}).status_code == 403
        ok = console.get(path, headers={"Origin": account.server.url}, stream=True)
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/event-stream")
        ok.close()


@pytest.mark.parametrize("field", ["payload", "sender", "subject"])
def test_xss_corpus_is_escaped_everywhere(account: Account, field: str) -> None:
    account.publish("bob.inbox", *[{**envelope("p"), field: item} for item in XSS_CORPUS])
    console = Console(account.server)
    console.login(account.key)
    for text in (console.get("/ui/pipes/bob.inbox").text, console.get("/ui/").text):
        for bad in ("<script>alert", "<img src=x", "<svg/onload", "<iframe", "<style>body", "\x1b", "\x07"):
            assert bad not in text, bad
    page = console.get("/ui/pipes/bob.inbox").text
    assert str(markupsafe.escape("<script>alert('xss')</script>")) in page
    assert "␛[31mred␛[0m" in page
    assert "{{ 7*7 }}" in page
    assert "&amp;lt;already-escaped&amp;gt;" in page
    resp = console.get("/ui/pipes/bob.inbox")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"
