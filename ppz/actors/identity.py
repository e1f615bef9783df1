"""The ``IdentityChanged`` broadcast: who listens and how the sender gets their answers.

``StateActor`` is the only sender. Like Mopidy's listeners, the receivers are found by class
in pykka's registry (every running :class:`IdentityListener`), so no start-up wiring is
needed between the state actor and the actors that depend on it. The broadcast asks without
waiting: the sender hands the futures to whoever must wait for the reactions (the ``Login``
and ``Logout`` handlers reply only after them) and never waits itself, so no ask can come
back to it in a cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pykka

from ppz.messages import IdentityChanged

logger = logging.getLogger(__name__)


class IdentityListener(pykka.ThreadingActor):
    """An actor that reacts to :class:`IdentityChanged`; its ``on_receive`` hands the message
    to :meth:`on_identity_changed` and answers with the problems it returns."""

    def on_identity_changed(self, change: IdentityChanged) -> list[str]:
        """React to ``change``; returns problems worth reporting (logout's removal errors)."""
        raise NotImplementedError

    def react(self, change: IdentityChanged) -> list[str]:
        """:meth:`on_identity_changed`, logged when it fails: after a reload nobody waits for
        the answer, so a failure would otherwise go unseen."""
        try:
            return self.on_identity_changed(change)
        except Exception:
            logger.exception("%s: reaction to IdentityChanged(%s) failed", type(self).__name__, change.caller)
            raise


@dataclass(frozen=True, slots=True)
class IdentityReactions:
    """The answers to one broadcast: ``problems`` the sender met itself, and one future per
    listener resolving to the problems that listener met."""

    problems: tuple[str, ...] = ()
    futures: tuple[pykka.Future[Any], ...] = ()

    def wait(self) -> list[str]:
        """Wait until every listener reacted; returns all problems, the sender's first.

        A listener that stopped meanwhile (the daemon is stopping) has nothing to report."""
        problems = list(self.problems)
        for future in self.futures:
            try:
                problems.extend(future.get())
            except pykka.ActorDeadError:
                pass
        return problems


def broadcast_identity(change: IdentityChanged, problems: tuple[str, ...] = ()) -> IdentityReactions:
    """Ask every running :class:`IdentityListener` to react to ``change``, without waiting."""
    refs = pykka.ActorRegistry.get_by_class(IdentityListener)
    logger.debug("IdentityChanged(%s) to %d listeners", change.caller, len(refs))
    return IdentityReactions(problems=problems,
                             futures=tuple(ref.ask(change, block=False) for ref in refs))
