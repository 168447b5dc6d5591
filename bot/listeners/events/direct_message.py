"""A direct message to the bot ("segments in the south"): answered in the conversation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient

from bot.listeners.events.app_mention import answer_text
from bot.replies import Destination, Replier


def is_direct_message(event: dict[str, Any]) -> bool:
    """A person's own new message in a DM with the bot (no edits, joins or bot posts)."""
    return (event.get("channel_type") == "im" and not event.get("subtype")
            and not event.get("bot_id") and bool(event.get("user")))


def ignore_message() -> None:
    """Other message events need no answer (Bolt acknowledges them)."""


def make_answer_direct_message(replier: Replier) -> Callable[..., None]:
    def answer_direct_message(ack: Ack, event: dict[str, Any], body: dict[str, Any],
                              client: WebClient) -> None:
        ack()  # at once; the answer is only queued
        if not replier.first_time(body.get("event_id")):
            return
        command, intro = answer_text(event.get("text") or "")
        dest = Destination(
            channel_id=event["channel"],
            user_id=event.get("user"),
            thread_ts=event.get("thread_ts"),
            direct=True,
            asked=command,
        )
        replier.submit(client, command, dest, intro=intro)

    return answer_direct_message
