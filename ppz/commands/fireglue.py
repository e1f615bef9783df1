"""All the glue between ``ppz.cli`` and Python Fire: the one module that knows Fire's internals.

Parsing happens in three steps, each for a rule of spec/cli.md §1.1 or §2:

* ``ppz __complete PREFIX`` and the command after ``heartbeat … --`` are split off before Fire
  sees anything (:func:`split_heartbeat_command`; Fire hides ``_``-names and would swallow the
  command's own flags);
* :func:`normalise_flags` rewrites every known flag to ``--name=value`` (booleans to
  ``--name=True``) so that a boolean flag never eats the next positional argument and a value
  that starts with ``-`` stays a value;
* a complete command whose arguments bind by Fire's rules (:func:`bind_command`) runs
  directly, without importing Fire (its import and parser cost ~25 ms, most of a ``ppz send``);
  anything else (``--help``, an incomplete or unknown command, a missing or surplus argument)
  goes to Fire, run with values kept exactly as typed: it prints the help or the usage error,
  or returns an :class:`Action` that runs only once every argument was consumed.

Fire is imported without ``asyncio`` (:func:`import_fire`), which halves its import time, and
adjusted by :func:`adapt_fire`. Every Fire internal used here is listed in
:data:`FIRE_INTERNALS`; ``tests/commands/test_fireglue.py`` covers each, and ``pyproject.toml``
pins Fire to the versions those tests pass on.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from ppz.commands.client import USAGE_EXIT, UsageError

# The Fire internals this module replaces or calls (module, name); a test checks they exist.
FIRE_INTERNALS = (
    ("fire.core", "Display"),
    ("fire.core", "_PrintResult"),
    ("fire.parser", "DefaultParseValue"),
    ("fire.inspectutils", "IsCoroutineFunction"),
    ("fire.helptext", "_GetArgType"),
    ("fire.helptext", "_GetArgDefault"),
    ("fire.helptext", "_CreateFlagItem"),
)

# The vocabulary of parameter annotations in ``ppz.cli``: aliases of ``str`` and ``bool`` whose
# name says what a value means, and the words the help shows for them (Fire would print the
# annotation itself, e.g. ``Type: Optional['str | None']``). A switch shows as ``--name``.
Text = str
Url = str
Handle = str
Target = str
PipeName = str
Pattern = str
Namespace = str
Count = str
Duration = str
MaybeDuration = str  # an optional value: --wait alone, or --wait=DUR (never the next argument)
Handles = str  # a comma-separated list; the flag may be repeated and its values add up
Shell = str
Switch = bool

HELP_TYPES = {
    "Text": "text",
    "Url": "URL",
    "Handle": "handle",
    "Target": "target",
    "PipeName": "pipe name",
    "Pattern": "name or glob",
    "Namespace": "dot-separated path",
    "Count": "integer",
    "Duration": "duration (e.g. 90s, 5m, 1h30m)",
    "MaybeDuration": "optional duration (e.g. 5m)",
    "Handles": "handles, comma-separated",
    "Shell": "bash or zsh",
    "Switch": "",
}


def annotation_name(annotation: Any) -> str:
    """``Count | None`` → ``Count``: the alias an annotation (a string: ``ppz.cli`` postpones
    annotations) names."""
    return str(annotation).split("|")[0].strip()


def is_switch(annotation: Any) -> bool:
    return annotation_name(annotation) == "Switch"


def takes_optional_value(annotation: Any) -> bool:
    return annotation_name(annotation) == "MaybeDuration"


def flag_word(name: str) -> str:
    """The flag a parameter is typed as: ``no_acks`` → ``no-acks``; a parameter named after a
    Python keyword drops its trailing underscore (``from_`` → ``from``)."""
    return name.rstrip("_").replace("_", "-")


class Action:
    """A command to run once every argument was consumed (by :func:`bind_command` or Fire).

    Fire calls a method and only then notices arguments it could not use; returning the work
    instead of doing it lets an unknown flag fail as a usage error before anything happens.

    The command is named ``"<module>.<function>"`` in ``ppz.commands`` and imported only when it
    runs, so a command loads its own module and no other.
    """

    __slots__ = ("command", "args")

    def __init__(self, command: str, *args: Any) -> None:
        self.command = command
        self.args = args

    def run(self) -> None:
        module, _, name = self.command.rpartition(".")
        getattr(__import__(f"ppz.commands.{module}", fromlist=[name]), name)(*self.args)


def adapt_fire(help_requested: bool) -> None:
    """The adjustments to Fire, each for a rule of spec/cli.md §1.1 or a readable help page:

    values stay exactly as typed (Fire would turn ``007`` into 7 and ``[1, 2]`` into a list);
    an :class:`Action` result is run by us rather than printed; help goes to stdout without a
    pager (usage errors to stderr); the help shows each parameter's type in words
    (:data:`HELP_TYPES`), a switch as ``--name``, a flag with hyphens, a short ``-x`` only where
    it works, and no ``Default: None``.
    """
    import functools

    import fire.core
    import fire.formatting
    import fire.helptext
    import fire.parser

    fire.parser.DefaultParseValue = lambda value: value
    # An Action is run by run_fire; anything else is an incomplete command (a usage error).
    fire.core._PrintResult = lambda component_trace, verbose=False, serialize=None: None
    stream = sys.stdout if help_requested else sys.stderr

    def display(lines: list[str], out: Any = None) -> None:
        stream.write("\n".join(lines) + "\n")

    fire.core.Display = display

    def arg_type(arg: str, spec: Any) -> str:
        return HELP_TYPES.get(annotation_name(spec.annotations.get(arg, "")), "")

    def arg_default(flag: str, spec: Any) -> str:
        # Every default of the surface means "not given"; the description says what that does.
        return ""

    # Fire's own, also when this runs again in one process (tests).
    create_flag_item = getattr(fire.helptext._CreateFlagItem, "__wrapped__", fire.helptext._CreateFlagItem)

    @functools.wraps(create_flag_item)
    def flag_item(flag: str, docstring_info: Any, spec: Any, required: bool = False,
                  flag_string: str | None = None, short_arg: bool = False) -> str:
        # Fire offers -x when x starts no other flag, but its parser (and normalise_flags) also
        # counts the positional parameters, and -h is help: offer only what works.
        names = [*spec.args, *spec.kwonlyargs]
        annotation = spec.annotations.get(flag, "")
        short_arg = (short_arg and flag[0] != "h" and sum(name.startswith(flag[0]) for name in names) == 1
                     and not takes_optional_value(annotation))
        if flag_string is None:
            shown = f"--{flag_word(flag)}"
            value = fire.formatting.Underline(flag.rstrip("_").upper())
            if takes_optional_value(annotation):
                shown += f"[={value}]"
            elif not is_switch(annotation):
                shown += "=" + value
            flag_string = shown
        item: str = create_flag_item(flag, docstring_info, spec, required=required, flag_string=flag_string,
                                     short_arg=short_arg)
        return item

    fire.helptext._GetArgType = arg_type
    fire.helptext._GetArgDefault = arg_default
    fire.helptext._CreateFlagItem = flag_item


class _Deferred(types.ModuleType):
    """Stands in for a module that Fire imports but never needs here (``asyncio``: ~50 ms,
    with ``ssl``). The first attribute access imports the real module and delegates to it."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        import importlib

        return getattr(importlib.import_module(self.__name__), name)


def import_fire() -> Any:
    """``fire``, imported without ``asyncio``. Fire only uses asyncio for coroutine commands,
    which this CLI has none of; the stand-in leaves ``sys.modules`` once Fire is loaded, so a
    later ``import asyncio`` (``daemon start --foreground``) gets the real module."""
    deferred = None
    if "asyncio" not in sys.modules:
        deferred = sys.modules["asyncio"] = _Deferred("asyncio")
    try:
        import fire
        import fire.inspectutils
    finally:
        if deferred is not None and sys.modules.get("asyncio") is deferred:
            del sys.modules["asyncio"]
    import inspect

    fire.inspectutils.IsCoroutineFunction = inspect.iscoroutinefunction
    return fire


def _is_flag(token: str) -> bool:
    """Fire's notion of a flag: ``--x``, or ``-`` followed by a letter (``-5`` is a value)."""
    return token.startswith("--") or (len(token) > 1 and token[0] == "-" and token[1].isalpha())


_CO_VARARGS = 0x04  # inspect.CO_VARARGS, without importing inspect (~4 ms with ast and dis)


class Params:
    """The parameters of a command method as Fire sees them (``self`` left out), read from its
    code object rather than with ``inspect.signature``: ``positional`` (in order), ``names``
    (every parameter a flag can set: the positional ones and the keyword-only ones),
    ``defaults`` (by name) and ``varargs`` (whether ``*args`` takes the remaining arguments)."""

    __slots__ = ("positional", "names", "defaults", "varargs", "optional_values", "lists")

    def __init__(self, fn: Callable[..., Any]) -> None:
        func = getattr(fn, "__func__", fn)
        code = func.__code__
        count = code.co_argcount
        every = code.co_varnames[: count + code.co_kwonlyargcount]
        first = 1 if hasattr(fn, "__self__") else 0
        pos_defaults = func.__defaults__ or ()
        self.positional: tuple[str, ...] = every[first:count]
        self.names: tuple[str, ...] = every[first:]
        self.defaults: dict[str, Any] = dict(zip(every[count - len(pos_defaults) : count], pos_defaults, strict=True))
        self.defaults.update(func.__kwdefaults__ or {})
        self.varargs = bool(code.co_flags & _CO_VARARGS)
        annotations = getattr(func, "__annotations__", {})
        #: flags whose value is optional (``--wait`` or ``--wait=5m``)
        self.optional_values = frozenset(n for n in self.names if takes_optional_value(annotations.get(n, "")))
        #: flags that may be repeated, their comma-separated values adding up
        self.lists = frozenset(n for n in self.names if annotation_name(annotations.get(n, "")) == "Handles")


def resolve_command(component: Any, argv: Sequence[str]) -> tuple[Callable[..., Any] | None, int]:
    """The method an argv names (following command groups) and how many tokens name it."""
    obj = component
    for i, token in enumerate(argv):
        if token.startswith("_") or _is_flag(token):
            break
        attr = getattr(obj, token, None)
        if attr is None:
            break
        if callable(attr):
            return attr, i + 1
        obj = attr
    return None, 0


def normalise_flags(component: Any, argv: list[str]) -> list[str]:
    """Rewrite the known flags of the command ``argv`` names so that Fire cannot misread them:

    ``--flag`` of a boolean → ``--flag=True`` (Fire would otherwise take the next positional
    argument as its value); ``--flag VALUE`` → ``--flag=VALUE`` (so a value such as ``-x`` or
    ``--`` stays a value); a value flag without a value is a usage error, except a flag whose
    value is optional (``MaybeDuration``): ``--wait`` → ``--wait=`` (it never takes the next
    argument). A repeated list flag (``Handles``) becomes one, its values joined by commas.
    Hyphens and underscores are equivalent; a flag named after a Python keyword is its
    parameter with a trailing underscore (``--from`` → ``--from_=…``); ``-l`` style short forms
    resolve as Fire does (a unique prefix letter). An unknown flag is a usage error.
    """
    fn, start = resolve_command(component, argv)
    if fn is None:
        return argv
    params = Params(fn)
    bools = {name for name, default in params.defaults.items() if default is False}
    values = set(params.defaults) - bools
    names = params.names
    out = list(argv[:start])
    list_at: dict[str, int] = {}  # where a list flag's token is in ``out``
    i = start
    while i < len(argv):
        token = argv[i]
        i += 1
        if not _is_flag(token) or token in ("-h", "--help"):
            out.append(token)
            continue
        key, eq, value = token.lstrip("-").partition("=")
        name = key.replace("-", "_")
        if name not in names and f"{name}_" in names:
            name += "_"
        if len(key) == 1 and not token.startswith("--"):
            candidates = [n for n in names if n.startswith(key)]
            name = candidates[0] if len(candidates) == 1 else name
        if name in bools:
            out.append(f"--{name}={value if eq else 'True'}")
        elif name.startswith("no") and name[2:] in bools and not eq:
            out.append(f"--{name[2:]}=False")
        elif name in params.optional_values:
            out.append(f"--{name}={value}")
        elif name in values:
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"ppz: flag --{key} needs a value")
                value = argv[i]
                i += 1
            if name in list_at:
                out[list_at[name]] += f",{value}"
                continue
            if name in params.lists:
                list_at[name] = len(out)
            out.append(f"--{name}={value}")
        elif name in names:
            out.append(token)  # a positional argument given by name (--payload=…)
        else:
            raise UsageError(f"ppz {' '.join(argv[:start])}: unknown flag {token} "
                             f"(see 'ppz {' '.join(argv[:start])} --help')")
    return out


def bind_command(component: Any, argv: list[str]) -> Action | None:
    """The :class:`Action` of a complete command, bound the way Fire binds it, without Fire.

    ``argv`` is normalised (:func:`normalise_flags`): every flag reads ``--name=value`` with
    the value as typed. Flags set their parameters; positional arguments fill the remaining
    positional parameters in order (``*patterns`` takes the rest); a parameter left over takes
    its default. Whatever does not bind this way — help, a group or unknown command, a missing
    or surplus argument, a flag in another form — returns None and is left to Fire, so help
    and usage errors stay Fire's.
    """
    if "--help" in argv or "-h" in argv:
        return None
    fn, start = resolve_command(component, argv)
    if fn is None:
        return None
    params = Params(fn)
    positional: list[str] = []
    flags: dict[str, str] = {}
    for token in argv[start:]:
        if not _is_flag(token):
            positional.append(token)
            continue
        name, eq, value = token[2:].partition("=")
        if not token.startswith("--") or not eq or name not in params.names:
            return None
        flags[name] = value  # the last one wins, as with Fire
    args: list[Any] = []
    for name in params.positional:
        if name in flags:
            args.append(flags.pop(name))
        elif positional:
            args.append(positional.pop(0))
        elif name in params.defaults:
            args.append(params.defaults[name])
        else:
            return None  # a required argument is missing
    if params.varargs:
        args += positional
    elif positional:
        return None  # a surplus argument
    action = fn(*args, **flags)
    return action if isinstance(action, Action) else None


def fire_call(component: Any, command: list[str], help_requested: bool) -> Any:
    """``fire.Fire`` on ``command``, adapted (:func:`adapt_fire`); a FireExit becomes the exit:
    0 after help, 2 (usage) otherwise."""
    fire = import_fire()
    adapt_fire(help_requested)
    try:
        return fire.Fire(component, command=command, name="ppz")
    except fire.core.FireExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise SystemExit(USAGE_EXIT if code not in (0, USAGE_EXIT) else code) from None


def run_fire(component: Any, argv: list[str]) -> None:
    """The generated CLI: Fire parses the normalised ``argv`` (usage errors, and every command
    that :func:`bind_command` leaves to it). Fire's own flags follow the last ``--``: a
    separator nobody types, so that a lone ``-`` (Fire's default separator) is an ordinary
    value."""
    result = fire_call(component, [*argv, "--", "--separator=\x00"], help_requested=False)
    if not isinstance(result, Action):
        raise UsageError(f"ppz: incomplete command: {' '.join(argv)} (see 'ppz --help')")
    result.run()


def show_help(component: Any, words: list[str]) -> None:
    """The help page of the command or group ``words`` name, on stdout, exit 0. Asked with Fire's
    own ``-- --help`` (a ``--help`` among the arguments would make Fire print an ``INFO:
    Showing help with the command …`` line first)."""
    fire_call(component, [*words, "--", "--help"], help_requested=True)


def help_words(component: Any, argv: list[str]) -> list[str]:
    """``--help`` anywhere: the leading words that name a command or group (``ppz send bob
    --help`` → ``send``), so that its help shows and exits 0 (cli.md §1.1) instead of a
    complaint about the arguments given with it."""
    words: list[str] = []
    node = component
    for token in argv:
        if token.startswith("-") or token.startswith("_"):
            break
        attr = getattr(node, token.replace("-", "_"), None)
        if attr is None:
            break
        words.append(token)
        if isinstance(attr, types.MethodType):
            break
        node = attr
    return words


def dispatch(component: Any, argv: list[str]) -> None:
    """Normalise the flags, then run a complete command directly (Fire's import and parser
    cost ~25 ms, most of a command's run time) or leave everything else to Fire."""
    if any(a in ("--help", "-h") for a in argv):
        show_help(component, help_words(component, argv))
        return
    argv = normalise_flags(component, argv)
    action = bind_command(component, argv)
    if action is None:
        run_fire(component, argv)
    else:
        action.run()


def split_heartbeat_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``heartbeat … -- COMMAND…``: everything after the first standalone ``--`` is the command."""
    if argv[:1] != ["heartbeat"] or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    command = argv[cut + 1 :]
    if not command:
        raise UsageError("ppz heartbeat: no command after --")
    return argv[:cut], command
