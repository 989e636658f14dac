"""What a notification says, for every receiver: the webhook's JSON and the chat text.

Sent for:

- ``DeployFinished`` with outcome ``deployed`` -> ``"event": "deployed"``,
  ``rolled_back`` -> ``"rollback"``, ``halted`` -> ``"halted"``, ``untrusted`` (the
  signature did not verify; nothing pulled, the reason says why) -> ``"untrusted"``;
- ``HaltedAlert`` -> ``"halted"`` (it comes first, so the operator hears at once);
- ``Held`` for a downgrade (the track moved back and was not followed) -> ``"downgrade"``.

``build_body`` makes the one message, from a fixed set of keys, with credentials in the
reason and the log tail blanked (``core/scrub.py``); ``chat_message`` renders
that same body as a title and a few lines for a chat, a mail or a push message, so every
receiver gets the same scrubbed text.
"""

from __future__ import annotations

from typing import Any

from twilight_agent.core.clock import utcnow
from twilight_agent.core.events import (
    HELD_DOWNGRADE,
    DeployFinished,
    DeployRef,
    Event,
    HaltedAlert,
    Held,
)
from twilight_agent.core.models import Release
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.scrub import scrub

LOG_TAIL_CHARS = 4000
_KINDS = {Outcome.DEPLOYED: "deployed", Outcome.ROLLED_BACK: "rollback",
          Outcome.HALTED: "halted", Outcome.UNTRUSTED: "untrusted"}
# Apprise's message types: how a chat colours or marks the message.
_LEVEL = {"deployed": "success", "rollback": "failure", "halted": "failure",
          "untrusted": "failure", "downgrade": "warning", "test": "info"}


def message_kind(event: Event) -> str | None:
    """The ``event`` of the message for an agent event, or None when none is sent."""
    if isinstance(event, DeployFinished):
        return _KINDS.get(event.outcome)
    if isinstance(event, HaltedAlert):
        return "halted"
    if isinstance(event, Held) and event.kind == HELD_DOWNGRADE:
        return "downgrade"
    return None


def _release(r: Release | None) -> dict[str, str | None]:
    return {"tag": r.tag or None, "digest": str(r.digest)} if r else {"tag": None,
                                                                      "digest": None}


def tail_lines(text: str, lines: int, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text`` (at most ``chars`` characters); 0: none."""
    if lines <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])[-chars:]


def _what(kind: str, image: str, from_tag: str, to_tag: str) -> str:
    if kind == "deployed":
        return f"deployed {image} {from_tag} -> {to_tag}"
    if kind == "rollback":
        return f"rolled back {image} {to_tag} -> {from_tag}"
    if kind == "downgrade":
        return f"held {image} at {from_tag}: the track moved back to {to_tag}"
    if kind == "untrusted":
        return f"refused {image} {to_tag}: its signature does not verify"
    if kind == "test":
        return f"test message for {image}: notifications reach this target"
    return f"HALTED {image} (operator needed)"


def build_body(kind: str, event: DeployFinished | HaltedAlert | Held, host: str,
               image: str, log_lines: int = 50) -> dict[str, Any]:
    """The JSON body, from a fixed set of keys only."""
    if isinstance(event, Held):  # nothing ran: the track moved back and was not followed
        ref = DeployRef(f"held-{event.build.digest.short}", event.running, event.build, "poll")
    else:
        ref = event.ref
    from_tag = (ref.from_.tag if ref.from_ else "") or "?"
    to_tag = (ref.to.tag if ref.to else "") or "?"
    reason = scrub(event.reason)
    tail = tail_lines(scrub(event.log_tail), log_lines) \
        if isinstance(event, DeployFinished) else ""
    outcome = event.outcome.value if isinstance(event, DeployFinished) else kind
    return {
        "event": kind, "host": host, "image": image, "deploy_id": ref.deploy_id,
        "timestamp": utcnow(), "outcome": outcome,
        "from": _release(ref.from_), "to": _release(ref.to),
        "reason": reason, "log_tail": tail,
        "text": f"{host}: {_what(kind, image, from_tag, to_tag)}"
        + (f": {reason}" if reason else ""),
    }


def notify_test_body(host: str, image: str) -> dict[str, Any]:
    """The message ``notify-test`` sends: the same keys, ``"event": "test"``."""
    none = _release(None)
    return {"event": "test", "host": host, "image": image, "deploy_id": "", "timestamp":
            utcnow(), "outcome": "test", "from": none, "to": none, "reason": "",
            "log_tail": "", "text": f"{host}: {_what('test', image, '?', '?')}"}


def _build_line(label: str, r: dict[str, str | None]) -> str | None:
    if not r.get("digest"):
        return None
    return f"{label}: {r.get('tag') or '?'} ({str(r['digest'])[:19]})"


def chat_message(body: dict[str, Any]) -> tuple[str, str, str]:
    """``(title, text, level)`` for a chat, a mail or a push message, from ``body``.

    The title is the first line a phone shows (host, what happened, the image); the text
    has the builds, the reason and the log tail, each on its own line. ``level`` is
    Apprise's notify type: ``success``, ``failure``, ``warning`` or ``info``.
    """
    kind = body["event"]
    title = {"deployed": "deployed", "rollback": "ROLLED BACK", "halted": "HALTED",
             "untrusted": "refused an untrusted build", "downgrade": "held a downgrade",
             "test": "test message"}.get(kind, kind)
    first = body["text"].removesuffix(f": {body['reason']}" if body["reason"] else "")
    lines: list[str | None] = [first]
    if kind in ("rollback", "halted", "untrusted", "downgrade"):
        lines += [_build_line("held build" if kind == "downgrade" else "failed build",
                              body["to"]), _build_line("serving", body["from"])]
    else:
        lines.append(_build_line("now serving", body["to"]))
    if body["reason"]:
        lines.append(f"reason: {body['reason']}")
    if body["deploy_id"]:
        lines.append(f"deploy: {body['deploy_id']}")
    if body["log_tail"]:
        lines += ["", "last log lines:", body["log_tail"].rstrip("\n")]
    text = "\n".join(line for line in lines if line is not None)
    return f"{body['host']}: {title} {body['image']}", text, _LEVEL.get(kind, "info")
