"""The event bus: every domain event goes to the audit log (one structured line, journald
fields under systemd) and to each sink (metrics file, webhook). A sink that raises is
logged and skipped: it never breaks a deploy."""

from __future__ import annotations

from collections.abc import Iterable

from twilight_agent.core.events import LOGGED, Event
from twilight_agent.core.ports import EventSink
from twilight_agent.logs import get_logger

log = get_logger("twilight.agent")


class EventBus:
    """``emit``: log (for the logged kinds) and hand to every sink; ``notify``: sinks only."""

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Event) -> None:
        if isinstance(event, LOGGED):
            log.info(event.name, **event.fields())
        self.notify(event)

    def notify(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:  # a sink must never break a deploy
                log.warning("sink_failed", sink=type(sink).__name__, error=str(exc))

    def close(self) -> None:
        """Flush and close the sinks that hold a thread or a file (webhook delivery)."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                close()
