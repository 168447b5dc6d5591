"""Every slash command: acknowledge at once, then answer through the router."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient

from bot.replies import Destination, Replier


def ack_command(ack: Ack) -> None:
    """Slack wants an answer within 3 seconds; the real answer follows."""
    ack()


def make_answer_command(replier: Replier) -> Callable[..., None]:
    def answer_command(command: dict[str, Any], client: WebClient) -> None:
        text = f"{command['command']} {command.get('text') or ''}".strip()
        dest = Destination(
            channel_id=command["channel_id"],
            user_id=command.get("user_id"),
            response_url=command.get("response_url"),
            asked=text,
        )
        replier.submit(client, text, dest)

    return answer_command
