"""The ``ppz`` command line (spec/cli.md): the command surface Python Fire reads, and ``main``.

Each method below names one command, documents it and its flags for ``--help`` (Fire reads the
``Args:`` sections; the annotations are the words of ``ppz.commands.fireglue.HELP_TYPES``), and
returns an :class:`~ppz.commands.fireglue.Action` naming the function in ``ppz.commands`` that
does the work. Parsing, binding and everything else that touches Fire is in
``ppz.commands.fireglue``; a complete command runs without importing Fire at all.

The CLI imports only what a command needs: the standard library, the stdlib-only ``ppz``
modules and the one ``ppz.commands`` module of the command. It never imports pykka, nats,
requests or orjson; ``daemon start --foreground`` imports ``bootstrap`` lazily, ``mcp`` the
``ppz.mcp`` package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ppz.commands.client import BROKEN_PIPE_EXIT, USAGE_EXIT, UsageError
from ppz.commands.fireglue import (
    Action,
    Count,
    Duration,
    Handle,
    Handles,
    MaybeDuration,
    Namespace,
    Pattern,
    PipeName,
    Shell,
    Switch,
    Target,
    Text,
    Url,
    dispatch,
    split_heartbeat_command,
)


class DaemonCommands:
    """Run and control the per-user daemon."""

    def start(self, *, foreground: Switch = False) -> Action:
        """Start the daemon in the background, or say that it already runs.

        Args:
          foreground: Run the daemon in this process until it is stopped.
        """
        return Action("daemon.start", foreground)

    def stop(self) -> Action:
        """Stop the running daemon."""
        return Action("daemon.stop")

    def restart(self) -> Action:
        """Stop the daemon, then start it again."""
        return Action("daemon.restart")

    def login(self, url: Url, apikey: Text | None = None) -> Action:
        """Log the daemon in to a ppz-server (same as ppz login).

        Args:
          url: The server's address; http:// is assumed for localhost and dotless hosts, https:// otherwise.
          apikey: An API key of the account (required).
        """
        return Action("daemon.login", url, apikey)

    def logout(self) -> Action:
        """Log out and forget the credential (same as ppz logout)."""
        return Action("daemon.logout")


class SourceCommands:
    """Create and destroy sources: the handles agents and people speak as."""

    def create(self, handle: Handle) -> Action:
        """Create a message source and make it this session's current handle.

        Args:
          handle: The new source's name (a-z, 0-9 and -).
        """
        return Action("source.create", handle)

    def destroy(self, pattern: Pattern) -> Action:
        """Destroy a source, a pipe, or every match of a glob.

        Args:
          pattern: HANDLE (a source), HANDLE.PIPE (a pipe), or a glob; a dotted glob matches custom pipes only.
        """
        return Action("source.destroy", pattern)


class SetCommands:
    """Set this session's current handle or namespace."""

    def handle(self, handle: Handle) -> Action:
        """Speak as an existing source in this session.

        Args:
          handle: The source to make this session's current handle.
        """
        return Action("session.set_handle", handle)

    def namespace(self, path: Namespace) -> Action:
        """Set this session's namespace, where bare pipe names resolve.

        Args:
          path: Dot-separated segments, e.g. team-a.ops.
        """
        return Action("session.set_namespace", path)


class UnsetCommands:
    """Clear this session's current handle or namespace."""

    def handle(self) -> Action:
        """Forget this session's current handle."""
        return Action("session.unset_handle")

    def namespace(self) -> Action:
        """Go back to the root namespace."""
        return Action("session.unset_namespace")


class GetCommands:
    """Show this session's settings."""

    def handle(self) -> Action:
        """Print the current handle (PPZ_CURRENT_HANDLE first); exit 1 when there is none."""
        return Action("session.get_handle")


class PipeCommands:
    """Create, tune and destroy pipes: HANDLE.NAME on a source, or an uncollared NAME."""

    def create(self, name: PipeName, *, ttl: Duration | None = None, max_msgs: Count | None = None,
               max_bytes: Count | None = None) -> Action:
        """Create a pipe, optionally with retention limits.

        Args:
          name: HANDLE.NAME (a pipe of that source) or NAME (uncollared, in this session's namespace).
          ttl: Drop messages older than this (0 = no age limit).
          max_msgs: Keep at most this many messages (-1 = unlimited).
          max_bytes: Keep at most this many bytes (-1 = unlimited).
        """
        return Action("pipe.write", "PipeCreate", name, ttl, max_msgs, max_bytes)

    def set(self, name: PipeName, *, ttl: Duration | None = None, max_msgs: Count | None = None,
            max_bytes: Count | None = None) -> Action:
        """Change a pipe's retention: name at least one of --ttl, --max-msgs, --max-bytes.

        Args:
          name: HANDLE.NAME or an uncollared NAME.
          ttl: Drop messages older than this (0 = no age limit).
          max_msgs: Keep at most this many messages (-1 = unlimited).
          max_bytes: Keep at most this many bytes (-1 = unlimited).
        """
        return Action("pipe.write", "PipeSet", name, ttl, max_msgs, max_bytes)

    def destroy(self, name: PipeName, *, recursive: Switch = False) -> Action:
        """Destroy a pipe and its messages.

        Args:
          name: HANDLE.NAME or an uncollared NAME.
          recursive: With a bare NAME, destroy the whole source NAME instead.
        """
        return Action("pipe.destroy", name, recursive)


class Ppz:
    """Pipes for AI agents: durable, named message pipes between agents and people.

    Run 'ppz COMMAND --help' for what a command does and its flags.
    """

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.daemon = DaemonCommands()
        self.source = SourceCommands()
        self.set = SetCommands()
        self.unset = UnsetCommands()
        self.get = GetCommands()
        self.pipe = PipeCommands()
        self.__command = command  # heartbeat's COMMAND (split off before Fire)

    def login(self, url: Url, apikey: Text | None = None) -> Action:
        """Log the daemon in to a ppz-server, starting the daemon if needed.

        Args:
          url: The server's address; http:// is assumed for localhost and dotless hosts, https:// otherwise.
          apikey: An API key of the account (required).
        """
        return Action("daemon.login", url, apikey)

    def logout(self) -> Action:
        """Log out: forget the credential, current handles and cursors (works without a daemon)."""
        return Action("daemon.logout")

    def status(self) -> Action:
        """Show the daemon's state: login, server, account, NATS connection, current source."""
        return Action("daemon.status")

    def send(self, target: Target, payload: Text, *, subject: Text | None = None, in_reply_to: Text | None = None,
             request_ack: Switch = False, priority: Text | None = None) -> Action:
        """Send PAYLOAD to TARGET; confirmed on stderr once the message is stored.

        Args:
          target: HANDLE.PIPE, or a bare NAME: the uncollared pipe NAME in this namespace if it exists, else NAME.inbox.
          payload: The message, sent exactly as typed.
          subject: A subject for the message (it may not start with ack:).
          in_reply_to: The id of the message this one answers.
          request_ack: Ask for a read receipt in your inbox (needs a current handle).
          priority: 1 or high, 2 or medium, 3 or low.
        """
        return Action("send.send", target, payload, subject, in_reply_to, request_ack, priority)

    def read(self, target: Target, *, tail: Switch = False, limit: Count | None = None,
             wait: MaybeDuration | None = None, from_: Handles | None = None, subject: Text | None = None,
             no_acks: Switch = False, json: Switch = False, raw: Switch = False, bare: Switch = False) -> Action:
        """Read the unread messages of TARGET and move this session's cursor past them.

        Args:
          target: HANDLE.PIPE, an uncollared PIPE, or inbox (the current handle's inbox).
          tail: After the unread messages, keep streaming new ones until Ctrl-C.
          limit: Read at most this many messages (default 10, 0 = all); not with --tail.
          wait: If nothing is unread, wait up to this long for a message (alone: no limit); exit 124 if none came.
          from_: Only messages from these handles (comma-separated, repeatable); the rest stay unread.
          subject: Only messages whose subject matches this glob (* ? [..] %); the rest stay unread.
          no_acks: Leave out read receipts (messages whose subject starts with ack:).
          json: Print each message as one JSON line.
          raw: Print the payloads exactly as sent, with nothing between them.
          bare: Print each payload followed by a newline (no table).
        """
        return Action("read.read", target, tail, limit, wait, from_, subject, no_acks, json, raw, bare)

    def reread(self, target: Target, *, limit: Count | None = None, skip: Count | None = None,
               since: Duration | None = None, from_: Handles | None = None, subject: Text | None = None,
               no_acks: Switch = False, json: Switch = False, raw: Switch = False, bare: Switch = False) -> Action:
        """Show retained messages of TARGET again, without moving cursors or sending receipts.

        Args:
          target: HANDLE.PIPE, an uncollared PIPE, or inbox (the current handle's inbox).
          limit: Show the last this many retained messages (default 10, 0 = all).
          skip: Leave out the first this many of them.
          since: Only messages created within this long.
          from_: Only messages from these handles (comma-separated, repeatable).
          subject: Only messages whose subject matches this glob (* ? [..] %).
          no_acks: Leave out read receipts (messages whose subject starts with ack:).
          json: Print each message as one JSON line.
          raw: Print the payloads exactly as sent, with nothing between them.
          bare: Print each payload followed by a newline (no table).
        """
        return Action("read.reread", target, limit, skip, since, from_, subject, no_acks, json, raw, bare)

    def ls(self, *patterns: Pattern, json: Switch = False, long: Switch = False, watch: Switch = False) -> Action:
        """List pipes: unread and buffered counts, the last message and its creator.

        Args:
          patterns: Names or globs of HANDLE.PIPE or uncollared pipes (* ? [..], and % for * without quoting).
          json: Print the listing as JSON.
          long: Add the retention columns TTL, MAX_MSGS and MAX_BYTES.
          watch: Wait until a listed pipe has unread messages, then list.
        """
        return Action("ls.ls", patterns, json, long, watch)

    def who(self, *, json: Switch = False, online: Switch = False, stale: Switch = False, offline: Switch = False,
            harness: Text | None = None, owner: Text | None = None) -> Action:
        """Show presence: who publishes heartbeats, and whether they are online, stale or offline.

        Args:
          json: Print the entries as JSON.
          online: Show online entries (--online, --stale and --offline add up; none = all).
          stale: Show stale entries.
          offline: Show offline entries.
          harness: Only entries of exactly this harness.
          owner: Only entries of exactly this owner.
        """
        return Action("who.who", json, online, stale, offline, harness, owner)

    def diagnostics(self, *, json: Switch = False, since: Duration | None = None, bundle: Switch = False) -> Action:
        """Show the health of the daemon's NATS connection and its recent events.

        Args:
          json: Print the daemon's report as JSON.
          since: Events from this long ago, read from the logs on disk (default: the newest 20).
          bundle: Write ~/ppz-diag-<time>.tgz for a bug report and print its path (works without a daemon).
        """
        return Action("diagnostics.diagnostics", json, since, bundle)

    def heartbeat(self, handle: Handle, *, interval: Duration | None = None, state: Text | None = None,
                  harness: Text | None = None, model: Text | None = None, once: Switch = False) -> Action:
        """Publish presence for HANDLE so that ppz who shows it.

        Beats every --interval until Ctrl-C, once with --once, or while the command after a
        standalone -- runs (ppz heartbeat HANDLE -- COMMAND...; the command gets PPZ_SESSION and
        PPZ_CURRENT_HANDLE set to HANDLE, and ppz exits with its status).

        Args:
          handle: The source to beat for (created as a pty source if it does not exist).
          interval: Time between beats (default 60s, at least 1s).
          state: The agent's state: idle or working.
          harness: The agent harness (default $PPZ_AGENT_HARNESS).
          model: The model (default $PPZ_AGENT_MODEL).
          once: Publish one beat and exit.
        """
        return Action("heartbeat.heartbeat", handle, interval, state, harness, model, once, self.__command)

    def mcp(self, *args: Text) -> Action:
        """Run the MCP server for agent hosts (Claude Code, Codex…) on stdin/stdout.

        ppz mcp [--as=HANDLE] [--session=S] [--watch=PATTERN]... [--channel]
        serves the tools whoami, send, read, reread, list, who and create_pipe and the resource
        ppz://inbox; stdout carries only MCP messages, logs go to stderr. --as makes HANDLE this
        session's current handle (created if missing); the session is --session, else
        $PPZ_SESSION, else mcp-HANDLE with --as, else mcp. The inbox and every --watch pattern
        (a name or glob, as for ppz ls; repeatable) are watched: subscribers of ppz://inbox are
        told about new mail, and with --channel so is Claude Code (notifications/claude/channel).

        ppz mcp install --claude|--codex [--as=HANDLE] prints, without running anything, the
        command (Claude Code) or the ~/.codex/config.toml block (Codex) that registers it.

        Args:
          args: The flags above, or install followed by its flags.
        """
        return Action("mcp.mcp", args)

    def completion(self, shell: Shell) -> Action:
        """Print a shell completion script; load it with: source <(ppz completion bash).

        Args:
          shell: bash or zsh.
        """
        return Action("completion.completion", shell)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["__complete"]:
            Action("completion.complete", args[1] if len(args) > 1 else "").run()
            return
        if args[:1] == ["mcp"] and "--help" not in args and "-h" not in args:
            # argparse, not Fire: --as is a Python keyword and --watch repeats
            Action("mcp.mcp", args[1:]).run()
            return
        args, command = split_heartbeat_command(args)
        dispatch(Ppz(command), args)
        sys.stdout.flush()
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(USAGE_EXIT) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # The reader went away (``ppz read … | head -1``): leave quietly, as a SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(BROKEN_PIPE_EXIT) from None


if __name__ == "__main__":
    main()
