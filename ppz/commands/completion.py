"""``ppz completion bash|zsh`` and the hidden ``ppz __complete PREFIX`` (spec/cli.md §2.14): the
completion scripts complete command names from a fixed list and targets from the daemon."""

from __future__ import annotations

import sys

from ppz import ipc
from ppz.commands.client import UsageError, emit, emit_lines

COMPLETE_DEADLINE = 2.0

COMMAND_NAMES = ("completion daemon diagnostics get heartbeat login logout ls pipe read reread send set "
                 "source status unset who")

BASH_COMPLETION = """# ppz bash completion. Load it with:  source <(ppz completion bash)
_ppz_words() {
    COMPREPLY=($(compgen -W "$1" -- "${COMP_WORDS[COMP_CWORD]}"))
}

_ppz_targets() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    COMPREPLY=($(compgen -W "$(ppz __complete "$cur" 2>/dev/null)" -- "$cur"))
}

_ppz() {
    local n=$COMP_CWORD cmd=${COMP_WORDS[1]} sub=${COMP_WORDS[2]}
    COMPREPLY=()
    case "${COMP_WORDS[COMP_CWORD]}" in -*) return ;; esac
    if [ "$n" -eq 1 ]; then _ppz_words "@COMMANDS@"; return; fi
    case "$cmd" in
        send|read|reread) [ "$n" -eq 2 ] && _ppz_targets ;;
        ls) _ppz_targets ;;
        daemon) [ "$n" -eq 2 ] && _ppz_words "start stop restart login logout" ;;
        completion) [ "$n" -eq 2 ] && _ppz_words "bash zsh" ;;
        get) [ "$n" -eq 2 ] && _ppz_words "handle" ;;
        unset) [ "$n" -eq 2 ] && _ppz_words "handle namespace" ;;
        source)
            if [ "$n" -eq 2 ]; then _ppz_words "create destroy"
            elif [ "$n" -eq 3 ] && [ "$sub" = destroy ]; then _ppz_targets; fi ;;
        set)
            if [ "$n" -eq 2 ]; then _ppz_words "handle namespace"
            elif [ "$n" -eq 3 ] && [ "$sub" = handle ]; then _ppz_targets; fi ;;
        pipe)
            if [ "$n" -eq 2 ]; then _ppz_words "create set destroy"
            elif [ "$n" -eq 3 ]; then _ppz_targets; fi ;;
    esac
}

complete -o default -F _ppz ppz
"""

ZSH_COMPLETION = """#compdef ppz
# ppz zsh completion. Load it with:  source <(ppz completion zsh)
_ppz_targets() {
    local -a targets
    targets=(${(f)"$(ppz __complete "$PREFIX" 2>/dev/null)"})
    compadd -a targets
}

_ppz() {
    local n=$CURRENT cmd=${words[2]} sub=${words[3]}
    [[ $PREFIX == -* ]] && return
    if (( n == 2 )); then compadd -- @COMMANDS@; return; fi
    case $cmd in
        send|read|reread) (( n == 3 )) && _ppz_targets ;;
        ls) _ppz_targets ;;
        daemon) (( n == 3 )) && compadd -- start stop restart login logout ;;
        completion) (( n == 3 )) && compadd -- bash zsh ;;
        get) (( n == 3 )) && compadd -- handle ;;
        unset) (( n == 3 )) && compadd -- handle namespace ;;
        source)
            if (( n == 3 )); then compadd -- create destroy
            elif (( n == 4 )) && [[ $sub == destroy ]]; then _ppz_targets; fi ;;
        set)
            if (( n == 3 )); then compadd -- handle namespace
            elif (( n == 4 )) && [[ $sub == handle ]]; then _ppz_targets; fi ;;
        pipe)
            if (( n == 3 )); then compadd -- create set destroy
            elif (( n == 4 )); then _ppz_targets; fi ;;
    esac
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _ppz "$@"
else
    compdef _ppz ppz
fi
"""


def completion_script(shell: str) -> str:
    """The completion script: command names from a fixed list, targets from ``ppz __complete``."""
    script = BASH_COMPLETION if shell == "bash" else ZSH_COMPLETION
    return script.replace("@COMMANDS@", COMMAND_NAMES)


def completion(shell: str) -> None:
    if shell not in ("bash", "zsh"):
        raise UsageError(f"ppz completion: unsupported shell '{shell}' (use bash or zsh)")
    emit(completion_script(shell))


def complete(prefix: str) -> None:
    """The hidden ``ppz __complete PREFIX``: handles and ``<handle>.<pipe>`` names starting with
    PREFIX, sorted, one per line. Any failure prints nothing (exit 0)."""
    try:
        reply = ipc.call("Complete", {}, timeout=COMPLETE_DEADLINE)
        names = set()
        for source in reply.get("sources") or ():
            handle = str(source["handle"])
            names.add(handle)
            names.update(f"{handle}.{pipe}" for pipe in source.get("pipes") or ())
        emit_lines(sorted(n for n in names if n.startswith(prefix)))
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - completion must never print an error
        return
