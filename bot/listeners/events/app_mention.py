"""`@Retail Pulse churn risk in Rio de Janeiro`: answered in a thread under the mention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient

from bot.mentions import EXAMPLES, mention_to_command
from bot.replies import Destination, Replier


def not_understood_intro() -> str:
    examples = "\n".join(f"• {e}" for e in EXAMPLES)
    return f"I couldn't tell what you're asking for. Try for example:\n{examples}"


def answer_text(text: str) -> tuple[str, str | None]:
    """(command text, intro): the mapped command, or the help with examples."""
    command = mention_to_command(text)
    if command is None:
        return "/pulse-help", not_understood_intro()
    return command, None


def make_answer_mention(replier: Replier) -> Callable[..., None]:
    def answer_mention(ack: Ack, event: dict[str, Any], body: dict[str, Any], client: WebClient) -> None:
        ack()  # at once; the answer is only queued
        if not replier.first_time(body.get("event_id")):
            return
        command, intro = answer_text(event.get("text") or "")
        dest = Destination(
            channel_id=event["channel"],
            user_id=event.get("user"),
            thread_ts=event.get("thread_ts") or event.get("ts"),
            asked=command,
        )
        replier.submit(client, command, dest, intro=intro)

    return answer_mention
