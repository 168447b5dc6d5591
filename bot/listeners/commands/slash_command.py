"""Every slash command: acknowledge at once, then hand the answer to the Replier's pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient

from bot.replies import Destination, Replier


def make_answer_command(replier: Replier) -> Callable[..., None]:
    def answer_command(ack: Ack, command: dict[str, Any], client: WebClient) -> None:
        # Slack wants the acknowledgement within 3 seconds; the real answer follows. Nothing
        # here waits: the answer is only queued (no Bolt lazy listener, no request copy).
        ack()
        text = f"{command['command']} {command.get('text') or ''}".strip()
        dest = Destination(
            channel_id=command["channel_id"],
            user_id=command.get("user_id"),
            response_url=command.get("response_url"),
            asked=text,
        )
        replier.submit(client, text, dest)

    return answer_command
