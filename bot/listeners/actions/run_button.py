"""A button under an answer: run the command text it carries, as the person who clicked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient

from bot.replies import Destination, Replier


def make_run_button(replier: Replier) -> Callable[..., None]:
    def run_button(ack: Ack, action: dict[str, Any], body: dict[str, Any],
                   client: WebClient) -> None:
        ack()  # at once; the answer is only queued
        text = action.get("value") or ""
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        if not text or not channel:
            return
        # Answer in the thread of the message that had the button (not under ephemerals).
        thread_ts = None
        if not container.get("is_ephemeral"):
            thread_ts = message.get("thread_ts") or message.get("ts") or container.get("message_ts")
        dest = Destination(
            channel_id=channel,
            user_id=(body.get("user") or {}).get("id"),
            response_url=body.get("response_url"),
            thread_ts=thread_ts,
            asked=text,
        )
        replier.submit(client, text, dest)

    return run_button
