"""Strict decoding of HTTP request bodies (spec/server-api.md §1): a JSON object with only the
documented fields, each of the documented JSON type."""

from __future__ import annotations

from typing import Any

import orjson

from ppz.errors import PpzError


def decode_object(body: bytes, *, allowed: frozenset[str], code: str) -> dict[str, Any]:
    """The body as a JSON object; anything else, or an unknown field, → ``PpzError(code)``."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PpzError(code, f"invalid request body: {exc}") from None
    if not isinstance(obj, dict):
        raise PpzError(code, "invalid request body: expected a JSON object")
    unknown = sorted(k for k in obj if k not in allowed)
    if unknown:
        raise PpzError(code, f'invalid request body: unknown field "{unknown[0]}"')
    return obj


def optional_str(obj: dict[str, Any], key: str, code: str) -> str:
    """A string field; absent or null → ``""``."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PpzError(code, f'invalid request body: field "{key}" must be a string')
    return value


def optional_int(obj: dict[str, Any], key: str, error: PpzError) -> int | None:
    """An integer field (booleans and floats are not integers); absent or null → None."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise error
    return value


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
