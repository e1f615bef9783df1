"""The HTTP API on Starlette (spec/server-api.md §1): the route table, the 1 MiB body cap (a body
announced larger is refused before it is read), the per-request time limit, bearer auth and the
single error envelope. Route semantics live in :mod:`ppz.server.service`; the blocking work of a
route (argon2, SQLite, NATS calls through :class:`~ppz.server.natsctl.NatsControl`) runs in a
worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ppz import errors
from ppz.errors import PpzError
from ppz.server import wire
from ppz.server.apikeys import Principal
from ppz.server.service import ControlPlane

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20
REQUEST_TIMEOUT = 10.0
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
PROTOCOL_CODES = {404: errors.E_NOT_FOUND, 405: errors.E_METHOD_NOT_ALLOWED, 413: errors.E_PAYLOAD_TOO_LARGE}
PROTOCOL_MESSAGES = {404: "not found", 405: "method not allowed"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What a route handler gets."""

    principal: Principal | None
    params: Mapping[str, str]
    query: Mapping[str, Sequence[str]]
    body: bytes
    host: str | None

    @property
    def who(self) -> Principal:
        assert self.principal is not None
        return self.principal


Handler = Callable[[Request], Any]


class BodyTooLarge(PpzError):
    def __init__(self) -> None:
        super().__init__(errors.E_PAYLOAD_TOO_LARGE, f"request body too large; max {MAX_BODY} bytes")


class JsonResponse(Response):
    media_type = JSON_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        return wire.dumps(content)


def error_response(exc: PpzError, headers: Mapping[str, str] | None = None) -> Response:
    """The error envelope with the status of its code."""
    return JsonResponse(exc.to_json(), status_code=exc.http_status, headers=headers)


def envelope_bytes(status: int, message: str) -> bytes:
    """The envelope of a failure below the application (a protocol error, a 404, a 405)."""
    return wire.dumps(PpzError(PROTOCOL_CODES.get(status, errors.E_PROTOCOL), message).to_json())


async def http_exception(request: HttpRequest, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown path, wrong method) as the envelope."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = PROTOCOL_MESSAGES.get(status, exc.detail)
    return Response(envelope_bytes(status, message), status_code=status, headers=exc.headers,
                    media_type=JSON_CONTENT_TYPE)


async def unexpected_error(request: HttpRequest, exc: Exception) -> Response:
    logger.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(PpzError(errors.E_INTERNAL, "internal server error"))


async def read_body(request: HttpRequest, limit: int = MAX_BODY) -> bytes:
    """The whole request body, at most ``limit`` bytes: a larger ``Content-Length`` is refused
    before anything is read; a chunked body is refused as soon as it passes the limit."""
    length_text = request.headers.get("content-length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise PpzError(errors.E_PROTOCOL, "invalid Content-Length") from None
        if length > limit:
            raise BodyTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge()
    return bytes(body)


def api_route(
    path: str, methods: dict[str, tuple[int, Handler]], *, plane: ControlPlane, auth: bool = True
) -> Route:
    """One path of the API: per method the success status and the handler. Auth comes after
    routing (405 before 401) and before the body is decoded."""

    def call(handler: Handler, request: HttpRequest, body: bytes) -> Any:
        principal = plane.authenticate(request.headers.get("authorization")) if auth else None
        return handler(
            Request(
                principal=principal,
                params=dict(request.path_params),
                query=parse_qs(request.url.query, keep_blank_values=True),
                body=body,
                host=request.headers.get("host"),
            )
        )

    async def endpoint(request: HttpRequest) -> Response:
        status, handler = methods[request.method]
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                body = await read_body(request)
                result = await run_in_threadpool(call, handler, request, body)
        except PpzError as exc:
            return error_response(exc)
        except TimeoutError:
            return error_response(PpzError(errors.E_INTERNAL, "request timed out"), {"Connection": "close"})
        except Exception:
            logger.exception("unexpected error in %s %s", request.method, request.url.path)
            return error_response(PpzError(errors.E_INTERNAL, "internal server error"))
        if status == 204:
            return Response(status_code=204)
        return JsonResponse(result, status_code=status)

    route = Route(path, endpoint, methods=list(methods))
    # Starlette adds HEAD to every GET route; the API answers HEAD with 405 like any other
    # undocumented method.
    route.methods = set(methods)
    return route


def routes(plane: ControlPlane, version: str) -> list[BaseRoute]:
    """The route table: path, then per method the success status and the handler."""

    def route(path: str, methods: dict[str, tuple[int, Handler]], auth: bool = True) -> Route:
        return api_route(path, methods, plane=plane, auth=auth)

    return [
        route("/healthz", {"GET": (200, lambda r: {"status": "ok", "version": version})}, auth=False),
        route("/api/v1/auth/exchange", {"POST": (200, lambda r: plane.exchange(r.body, r.host))}, auth=False),
        route(
            "/api/v1/sources",
            {
                "GET": (200, lambda r: plane.list_sources(r.who)),
                "POST": (201, lambda r: plane.create_source(r.who, r.body)),
            },
        ),
        route(
            "/api/v1/sources/{handle}",
            {
                "GET": (200, lambda r: plane.get_source(r.who, r.params["handle"])),
                "DELETE": (204, lambda r: plane.delete_source(r.who, r.params["handle"])),
            },
        ),
        route(
            "/api/v1/sources/{handle}/ensure-pty",
            {"POST": (200, lambda r: plane.ensure_pty(r.who, r.params["handle"]))},
        ),
        route(
            "/api/v1/sources/{handle}/pipes",
            {"POST": (201, lambda r: plane.create_pipe(r.who, r.params["handle"], r.body))},
        ),
        route(
            "/api/v1/sources/{handle}/pipes/{name}",
            {
                "PATCH": (200, lambda r: plane.set_pipe(r.who, r.params["handle"], r.params["name"], r.body)),
                "DELETE": (204, lambda r: plane.delete_pipe(r.who, r.params["handle"], r.params["name"])),
            },
        ),
        route(
            "/api/v1/pipes",
            {
                "GET": (200, lambda r: plane.list_uncollared(r.who)),
                "POST": (201, lambda r: plane.create_uncollared(r.who, r.body)),
                "PATCH": (200, lambda r: plane.set_uncollared(r.who, r.body)),
                "DELETE": (204, lambda r: plane.delete_uncollared(r.who, r.query)),
            },
        ),
    ]
