"""Helpers for the console tests: accounts, a signed-in console client, NATS publishing with
minted credentials, reading a Server-Sent Event stream."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from dataclasses import dataclass
from typing import Any

import requests
from server_testkit import ApiClient, connect_exchanged, new_account
from serverfixture import ServerProcess

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Account:
    server: ServerProcess
    key: str
    account_id: str
    api: ApiClient

    def publish(self, subject_tail: str, *envelopes: dict[str, Any]) -> int:
        """Publish raw envelopes on ``<acct>.<subject_tail>`` with a minted user credential
        (what an agent's daemon does), in order; the stream sequence of the last."""
        reply = self.api.exchange().json()

        async def go() -> int:
            nc = await connect_exchanged(self.server, reply)
            try:
                seq = 0
                for envelope in envelopes:
                    subject = f"{self.account_id}.{subject_tail}"
                    seq = int((await nc.jetstream().publish(subject, json.dumps(envelope).encode())).seq)
                return seq
            finally:
                await nc.close()

        return asyncio.run(go())


def new_console_account(server: ServerProcess) -> Account:
    key, account_id = new_account(server)
    api = ApiClient(server.url, key, account_id)
    for body in ({"handle": "bob"}, {"handle": "agent", "kind": "pty"}):
        assert api.post("/api/v1/sources", json=body).status_code == 201
    return Account(server=server, key=key, account_id=account_id, api=api)


class Console:
    """A browser-like session of the console (cookies kept, redirects not followed)."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.http = requests.Session()
        self.csrf = ""

    def get(self, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 15)
        return self.http.get(self.url + path, **kw)

    def post(self, path: str, data: dict[str, str], **kw: Any) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 15)
        return self.http.post(self.url + path, data=data, **kw)

    def login(self, key: str) -> requests.Response:
        resp = self.post("/ui/login", {"api_key": key})
        assert resp.status_code == 303, resp.text
        page = self.get("/ui/")
        assert page.status_code == 200, page.text
        self.csrf = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
        return resp

    def send(self, to: str, message: str, as_: str = "bob", **fields: str) -> requests.Response:
        data = {"to": to, "message": message, "as": as_, "csrf": self.csrf, **fields}
        return self.post("/ui/send", data, headers={"Accept": "application/json"})


class EventReader:
    """Reads an event stream on its own socket in a thread; ``events`` collects
    ``(event, id, data)``. :meth:`close` shuts the socket down, which ends the read at once."""

    def __init__(self, console: Console, path: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.changed = threading.Condition()
        host, port = console.url.removeprefix("http://").split(":")
        cookie = "; ".join(f"{c.name}={c.value}" for c in console.http.cookies)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"Cookie: {cookie}"] if cookie else []
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._sock = socket.create_connection((host, int(port)), timeout=30)
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._file = self._sock.makefile("rb")
        status_line = self._file.readline().decode()
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        while (line := self._file.readline().decode().rstrip("\r\n")):
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()

    def _read(self) -> None:
        event, event_id, data = "message", "", ""
        try:
            for raw in self._file:
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if data:
                        with self.changed:
                            self.events.append((event, event_id, json.loads(data)))
                            self.changed.notify_all()
                    event, event_id, data = "message", "", ""
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif all(c in "0123456789abcdefABCDEF" for c in line):
                    continue  # a chunk-size line of the chunked body
        except (OSError, ValueError):
            pass

    def wait(self, count: int, timeout: float = 10.0) -> list[tuple[str, str, Any]]:
        """Wait until ``count`` events arrived; the events."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(f"{len(self.events)} event(s) after {timeout}s, wanted {count}")
            return list(self.events)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
