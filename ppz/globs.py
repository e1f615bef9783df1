"""Name globs of spec/cli.md §1.5, shared by the CLI (``ls``, ``source destroy``) and the daemon
(``List`` patterns, ipc.md §7.14). Pure; standard library only (the CLI imports it).

A pattern matches the **whole** name: ``*`` any run of characters (dots included), ``?`` one
character, ``[abc]`` / ``[a-z]`` a class (``[^…]`` negates; ``[!…]`` too, as in shells), and ``%``
is an alias of ``*`` that needs no shell quoting. Every other character matches itself. An
unterminated ``[`` matches a literal ``[``.
"""

from __future__ import annotations

import re
from functools import lru_cache

GLOB_CHARS = frozenset("*?[%")

# Inside a class, these would change the meaning of a Python regex (escapes, nested sets and
# the reserved set operations ``&&``, ``~~``, ``||``).
_CLASS_ESCAPE = frozenset("\\[&~|")


def is_literal(pattern: str) -> bool:
    """True when ``pattern`` contains none of ``*?[%`` (it can only match itself)."""
    return not any(c in GLOB_CHARS for c in pattern)


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start``, or -1 when there is none.

    A ``]`` right after ``[`` (or after ``[^`` / ``[!``) is a member, not the end.
    """
    i = start + 1
    if i < len(pattern) and pattern[i] in "^!":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    end = pattern.find("]", i)
    return end


def _class_regex(body: str) -> str:
    negate = body[:1] in ("^", "!")
    if negate:
        body = body[1:]
    members = "".join("\\" + c if c in _CLASS_ESCAPE else c for c in body)
    if members.startswith("]"):
        members = "\\" + members
    return "[" + ("^" if negate else "") + members + "]"


def translate(pattern: str) -> str:
    """The regular expression (for ``re.fullmatch``) equivalent to ``pattern``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c in "*%":
            while i + 1 < n and pattern[i + 1] in "*%":
                i += 1
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (end := _class_end(pattern, i)) > 0:
            out.append(_class_regex(pattern[i + 1 : end]))
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(translate(pattern), re.DOTALL)
    except re.error:  # e.g. a reversed range [z-a]: such a class matches nothing
        return None


def glob_match(pattern: str, name: str) -> bool:
    """True when ``pattern`` matches the whole of ``name``."""
    if is_literal(pattern):
        return pattern == name
    compiled = _compiled(pattern)
    return compiled is not None and compiled.fullmatch(name) is not None


def match_any(patterns: list[str] | tuple[str, ...], name: str) -> bool:
    """True when any pattern matches ``name``; no patterns match everything."""
    return not patterns or any(glob_match(p, name) for p in patterns)
