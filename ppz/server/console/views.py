"""The console's routes (``/ui/…``): sign-in and sign-out, the account overview with live
presence, a pipe page with paging and a live tail (Server-Sent Events), the send box, and the
account's API keys.

Every page and stream is scoped to the session's account: names in URLs and forms are looked
up inside that account only, so another account's pipe is simply not found. Every POST must
carry the page's CSRF token and must not come from a foreign ``Origin``; event streams refuse a
foreign ``Origin`` too. The API key is read from the sign-in form once and never put in a URL,
a page, a cookie or a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ppz import errors, names
from ppz.envelope import encode_checked, new_envelope
from ppz.errors import PpzError
from ppz.server.apikeys import KeyVerifier
from ppz.server.console.feed import ConsoleFeed, rfc3339_now
from ppz.server.console.render import PipeEntry, parse_priority
from ppz.server.console.sessions import COOKIE, Session, Sessions
from ppz.server.httpapi import BodyTooLarge, read_body
from ppz.server.store import Store

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
FORM_LIMIT = 256 * 1024
PAGE_TIMEOUT = 10.0
PRESENCE_EVERY = 2.0
PIPES_EVERY_TICKS = 3
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make browsers send "Origin: null"
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """ASGI middleware: the console's responses carry a strict CSP and no-store caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/ui"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def foreign_request(request: Request) -> bool:
    """True when the browser says the request comes from another site: an ``Origin`` that is not
    this server's (``null`` included), or ``Sec-Fetch-Site: cross-site``."""
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() != own_origin(request):
        return True
    return request.headers.get("sec-fetch-site", "").lower() == "cross-site"


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (at most 256 KiB) as single values."""
    body = await read_body(request, FORM_LIMIT)
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise PpzError(errors.E_PROTOCOL, "form is not UTF-8") from None
    return {k: v[0] for k, v in fields.items()}


class Console:
    """The console application: its routes and what they share."""

    def __init__(self, *, store: Store, verifier: KeyVerifier, feed: ConsoleFeed, sessions: Sessions | None = None,
                 version: str = "") -> None:
        self.store = store
        self.verifier = verifier
        self.feed = feed
        self.sessions = sessions or Sessions()
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
        env.globals["version"] = version
        self.templates = Jinja2Templates(env=env)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ui", lambda r: RedirectResponse("/ui/", 303)),
            Mount("/ui", routes=[
                Route("/", self.overview, methods=["GET"]),
                Route("/login", self.login_page, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/events", self.overview_events, methods=["GET"]),
                Route("/pipes/{name}", self.pipe_page, methods=["GET"]),
                Route("/pipes/{name}/events", self.pipe_events, methods=["GET"]),
                Route("/send", self.send, methods=["POST"]),
                Route("/keys", self.keys_page, methods=["GET"]),
                Route("/keys/revoke", self.revoke_key, methods=["POST"]),
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
            ]),
        ]

    # --- helpers ---------------------------------------------------------------------------

    async def session(self, request: Request) -> Session | None:
        """The request's live session; one whose key was revoked meanwhile is closed."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        if not await run_in_threadpool(self.store.key_active, session.key_id):
            self.sessions.close_key(session.key_id)
            return None
        return session

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def error_page(self, request: Request, status: int, message: str, session: Session | None = None) -> Response:
        return self.render(request, "error.html", {"session": session, "status": status, "message": message},
                           status)

    async def guarded_page(
        self, request: Request, build: Callable[[Session], Awaitable[Response]]
    ) -> Response:
        """A GET page: without a session 303 to the sign-in page; failures as an error page."""
        session = await self.session(request)
        if session is None:
            return RedirectResponse("/ui/login", 303)
        try:
            async with asyncio.timeout(PAGE_TIMEOUT):
                return await build(session)
        except TimeoutError:
            return self.error_page(request, 504, "the page took too long; try again", session)
        except Exception:
            logger.exception("console page %s failed", request.url.path)
            return self.error_page(request, 500, "something went wrong on the server", session)

    async def checked_post(self, request: Request) -> tuple[Session | None, dict[str, str], Response | None]:
        """Session, form and, when the POST must be refused, the refusal: 403 for a foreign
        origin or a missing or wrong CSRF token, 401 without a session."""
        if foreign_request(request):
            return None, {}, self.error_page(request, 403, "cross-origin request refused")
        try:
            form = await read_form(request)
        except BodyTooLarge:
            return None, {}, self.error_page(request, 413, "form too large")
        except PpzError:
            return None, {}, self.error_page(request, 400, "malformed form")
        session = await self.session(request)
        if session is None:
            return None, form, self.error_page(request, 401, "not signed in")
        if not session.csrf_ok(form.get("csrf")):
            return session, form, self.error_page(request, 403, "missing or invalid CSRF token", session)
        return session, form, None

    # --- sign in and out -------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if await self.session(request) is not None:
            return RedirectResponse("/ui/", 303)
        return self.render(request, "login.html", {"session": None, "error": ""})

    async def login(self, request: Request) -> Response:
        if foreign_request(request):
            return self.error_page(request, 403, "cross-origin request refused")
        try:
            form = await read_form(request)
        except PpzError:
            return self.error_page(request, 400, "malformed form")
        principal = await run_in_threadpool(self.verifier.verify, form.get("api_key", "").strip())
        if principal is None:
            return self.render(request, "login.html", {"session": None, "error": "invalid api key"}, 401)
        account = await run_in_threadpool(self.store.account, principal.account_id)
        if account is None:
            return self.render(request, "login.html", {"session": None, "error": "invalid api key"}, 401)
        old = request.cookies.get(COOKIE)
        self.sessions.close(old)
        session = self.sessions.open(account_id=account.id, account_name=account.name, principal=principal.name,
                                     key_id=principal.key_id)
        logger.info("console: %s of account %s signed in", principal.name, account.name)
        response = RedirectResponse("/ui/", 303)
        response.set_cookie(COOKIE, session.id, path="/ui", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        session, _, refusal = await self.checked_post(request)
        if refusal is not None and session is None and refusal.status_code == 401:
            refusal = None  # signing out without a session: already out
        if refusal is not None:
            return refusal
        if session is not None:
            self.sessions.close(session.id)
        response = RedirectResponse("/ui/login", 303)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    # --- overview --------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        async def build(session: Session) -> Response:
            account_id = session.account_id
            sources = await run_in_threadpool(self.store.sources, account_id)
            uncollared = await run_in_threadpool(self.store.uncollared_pipes, account_id)
            pipes = await self.feed.pipes(account_id)
            summaries = await self.feed.summaries(account_id, pipes)
            presence = await self.feed.presence(account_id)
            return self.render(request, "overview.html", {
                "session": session, "sources": sources, "uncollared": uncollared,
                "pipes": summaries, "presence": presence,
            })

        return await self.guarded_page(request, build)

    async def overview_events(self, request: Request) -> Response:
        """The overview, live: presence rows every 2 s (``presence`` events) and the pipe
        summaries every 6 s (``pipes`` events)."""
        refusal = await self.stream_refusal(request)
        if isinstance(refusal, Response):
            return refusal
        session = refusal
        sid = session.id

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            try:
                tick = 0
                while not self.feed.closing and self.sessions.get(sid) is not None:
                    yield sse("presence", await self.feed.presence(session.account_id))
                    if tick % PIPES_EVERY_TICKS == 0:
                        pipes = await self.feed.pipes(session.account_id)
                        yield sse("pipes", await self.feed.summaries(session.account_id, pipes))
                    tick += 1
                    await asyncio.sleep(PRESENCE_EVERY)
            except Exception as exc:  # noqa: BLE001 - end the stream; the browser reconnects
                logger.warning("console presence stream ended: %s", exc)

        return event_stream(events())

    async def stream_refusal(self, request: Request) -> Session | Response:
        """The session of an event stream, or its refusal: 403 for a foreign origin, 401
        without a session."""
        if foreign_request(request):
            return Response("cross-origin request refused\n", 403, media_type="text/plain")
        session = await self.session(request)
        if session is None:
            return Response("not signed in\n", 401, media_type="text/plain")
        return session

    # --- pipes -----------------------------------------------------------------------------

    async def pipe_page(self, request: Request) -> Response:
        name = request.path_params["name"]

        async def build(session: Session) -> Response:
            pipe = await self.feed.find_pipe(session.account_id, name)
            if pipe is None:
                return self.error_page(request, 404, f"no pipe {name!r} in this account", session)
            before = _int(request.query_params.get("before"))
            page = await self.feed.page(session.account_id, pipe, before)
            sources = await run_in_threadpool(self.store.sources, session.account_id)
            return self.render(request, "pipe.html", {
                "session": session, "pipe": pipe, "page": page, "before": before,
                "senders": [names.join_path(s.manifold, s.handle) for s in sources],
                "sender_values": [s.handle for s in sources],
                "quoted": quote(pipe.name),
            })

        return await self.guarded_page(request, build)

    async def pipe_events(self, request: Request) -> Response:
        """The live tail: every message stored after ``?after=`` (or ``Last-Event-ID``, or now)
        as a ``msg`` event whose data is the message's JSON view."""
        refusal = await self.stream_refusal(request)
        if isinstance(refusal, Response):
            return refusal
        session = refusal
        pipe = await self.feed.find_pipe(session.account_id, request.path_params["name"])
        if pipe is None:
            return Response("no such pipe\n", 404, media_type="text/plain")
        after = _int(request.headers.get("last-event-id")) or _int(request.query_params.get("after"))
        if after <= 0 and "after" not in request.query_params:
            after = await self.feed.last_seq(session.account_id, pipe)
        sid = session.id

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 1000\n\n"
            try:
                async with aclosing(self.feed.tail(session.account_id, pipe, after)) as views:
                    async for view in views:
                        if self.sessions.get(sid) is None:
                            return
                        if view is None:
                            if await self.session(request) is None:
                                return
                            yield b": keep-alive\n\n"
                            continue
                        yield sse("msg", view, view["seq"])
            except Exception as exc:  # noqa: BLE001 - end the stream; the browser reconnects after the last id
                logger.warning("console tail of %s ended: %s", pipe.name, exc)

        return event_stream(events())

    # --- send ------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        wants_json = "application/json" in request.headers.get("accept", "")
        session, form, refusal = await self.checked_post(request)
        if refusal is not None:
            if wants_json:
                return JSONResponse({"error": {"message": _refusal_text(refusal)}}, refusal.status_code)
            return refusal
        assert session is not None
        try:
            pipe, seq = await self._send(session, form)
        except PpzError as exc:
            if wants_json:
                return JSONResponse(exc.to_json(), exc.http_status)
            return self.error_page(request, exc.http_status, exc.message, session)
        if wants_json:
            return JSONResponse({"seq": seq, "to": pipe.name})
        return RedirectResponse(f"/ui/pipes/{quote(pipe.name)}", 303)

    async def _send(self, session: Session, form: dict[str, str]) -> tuple[PipeEntry, int]:
        account_id = session.account_id
        priority = parse_priority(form.get("priority", ""))
        if priority is None:
            raise PpzError(errors.E_INVALID_PRIORITY)
        subject = form.get("subject", "").strip()
        if subject.startswith("ack:"):
            raise PpzError(errors.E_INVALID_SUBJECT)
        sender = form.get("as", "").strip()
        if not names.valid_handle(sender) or await run_in_threadpool(self.store.source, account_id, sender) is None:
            raise errors.source_not_found(sender)
        to = form.get("to", "").strip()
        pipe = await self.feed.find_pipe(account_id, to)
        if pipe is None:
            # A bare handle means the source's inbox, as with `ppz send bob`.
            target = await run_in_threadpool(self.store.source, account_id, to) if names.valid_handle(to) else None
            if target is None:
                raise PpzError(errors.E_PIPE_NOT_FOUND, f"pipe '{to}' not found")
            pipe = PipeEntry(manifold=target.manifold, handle=target.handle, pipe="inbox")
        message = form.get("message", "")
        env = new_envelope(sender=sender, subject=subject, payload=message, priority=priority)
        data = encode_checked(env)
        try:
            seq = await self.feed.send(account_id, pipe, data)
        except Exception as exc:  # noqa: BLE001 - any publish failure is an unconfirmed delivery
            logger.warning("console send to %s failed: %s", pipe.name, exc)
            raise PpzError(errors.E_DELIVERY_UNCONFIRMED, "the message was not confirmed") from None
        logger.info("console: %s sent as %s to %s", session.principal, sender, pipe.name)
        return pipe, seq

    # --- keys ------------------------------------------------------------------------------

    async def keys_page(self, request: Request) -> Response:
        async def build(session: Session) -> Response:
            keys = await run_in_threadpool(self.store.key_infos, account_id=session.account_id)
            return self.render(request, "keys.html", {"session": session, "keys": keys})

        return await self.guarded_page(request, build)

    async def revoke_key(self, request: Request) -> Response:
        session, form, refusal = await self.checked_post(request)
        if refusal is not None:
            return refusal
        assert session is not None
        key_id = _int(form.get("key"))
        keys = await run_in_threadpool(self.store.key_infos, account_id=session.account_id)
        if key_id not in {k.id for k in keys}:
            return self.error_page(request, 404, "no such key in this account", session)
        await run_in_threadpool(self.store.revoke_key, key_id, rfc3339_now())
        self.sessions.close_key(key_id)
        logger.info("console: %s revoked a key of account %s", session.principal, session.account_name)
        return RedirectResponse("/ui/keys", 303)


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One Server-Sent Event; ``data`` as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (head + f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n").encode()


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or "0"))
    except ValueError:
        return 0


def _refusal_text(response: Response) -> str:
    return {401: "not signed in", 403: "refused", 413: "form too large"}.get(response.status_code, "bad request")

