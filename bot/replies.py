"""Answering in Slack: route a command text, then post the Answer where it belongs.

In-channel answers are posted with chat.postMessage so their charts can be threaded under
them; ephemeral ones (and every error) go through the response_url, or chat.postEphemeral
when there is none (mentions). Exports are shared as CSV files into the channel. Work runs
on a pool of our own, so Bolt's threads stay free to acknowledge within 3 seconds; answers
come from the pre-rendered answer cache when there (bot/answer_cache.py).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient

from bot.answer_cache import AnswerCache
from bot.answer_processes import AnswerProcesses
from bot.answers import Answer
from bot.blocks import answer_blocks, fallback_text, note_blocks
from bot.router import Requester, Router
from bot.settings import Settings
from bot.slack_io import CHANNEL_REFUSALS, api_error, post_response, upload_files

log = logging.getLogger(__name__)


class AcksFirst:
    """Slack requests being acknowledged: answer work waits until none is (at most
    `max_wait` seconds), so that a burst of commands is acknowledged before this process
    spends its interpreter lock on looking up and posting their answers."""

    def __init__(self, max_wait: float = 0.05):
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._in_flight = 0
        self.handled = 0  # requests seen

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def request(self) -> Iterator[None]:
        """Around the handling of one Slack request."""
        with self._cond:
            self._in_flight += 1
            self.handled += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                if not self._in_flight:
                    self._cond.notify_all()

    def wait(self) -> None:
        """Until no request is being handled, or `max_wait` seconds."""
        if self.max_wait > 0:
            with self._cond:
                self._cond.wait_for(lambda: not self._in_flight, timeout=self.max_wait)


@dataclass(frozen=True)
class Destination:
    """Where an answer goes and who asked.

    `thread_ts`: answer under this message (mentions, buttons). `direct`: a DM with the
    bot, where everything is posted as a normal message. `asked`: the command text, shown
    under in-channel answers.
    """

    channel_id: str
    user_id: str | None = None
    response_url: str | None = None
    thread_ts: str | None = None
    direct: bool = False
    asked: str | None = None

    @property
    def requester(self) -> Requester:
        return Requester(self.user_id, self.channel_id, source="slack")


class Replier:
    """Runs command texts through the router on a worker pool and posts the answers."""

    def __init__(self, router: Router, settings: Settings, *, workers: int = 16,
                 reply_workers: int = 4, answer_processes: int = 0):
        self.router = router
        self.acks = AcksFirst()  # the HTTP server (bot/server.py) counts the requests in flight
        self.answers = AnswerCache(router)
        if answer_processes > 0:  # answers not pre-rendered are computed off this process
            processes = AnswerProcesses(router.engine, settings, answer_processes)
            if processes.usable:
                self.answers.processes = processes
                processes.start()
        self.settings = settings
        # Two pools: a few threads post pre-rendered answers (more would only fight over the
        # GIL with the threads acknowledging Slack); anything to compute goes to `pool`.
        self.replies = ThreadPoolExecutor(max_workers=reply_workers,
                                          thread_name_prefix="pulse-reply")
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pulse-answer")
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._in_flight: set[Future] = set()
        self._in_flight_lock = threading.Lock()

    # --- entry points (called from listeners) -------------------------------------------

    def submit(self, client: WebClient, text: str, dest: Destination,
               intro: str | None = None) -> Future:
        """Answer `text` in the background; failures become a reply with a reference.
        The future is done when the answer has been posted (or its failure told)."""
        done: Future = Future()
        with self._in_flight_lock:
            self._in_flight.add(done)
        done.add_done_callback(self._landed)

        def route() -> None:
            self.acks.wait()
            try:
                cached = self.answers.cached(text)
            except Exception:  # noqa: BLE001 - computing it reports any failure
                log.exception("cache lookup for %r failed", text)
                cached = None
            if cached is None:
                try:
                    self.pool.submit(self._answer_into, done, client, text, dest, intro, None)
                except RuntimeError:  # shutting down
                    done.set_result(None)
            else:
                self._answer_into(done, client, text, dest, intro, cached)

        self.replies.submit(route)
        return done

    def _landed(self, done: Future) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(done)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted answer has been posted; False if `timeout` ran out."""
        with self._in_flight_lock:
            pending = list(self._in_flight)
        return not wait(pending, timeout=timeout).not_done

    def _answer_into(self, done: Future, client: WebClient, text: str, dest: Destination,
                     intro: str | None, cached: Answer | None) -> None:
        try:
            self.answer(client, text, dest, intro, cached=cached)
        finally:
            done.set_result(None)

    def answer(self, client: WebClient, text: str, dest: Destination,
               intro: str | None = None, *, cached: Answer | None = None) -> None:
        """Answer `text` now (blocking), or post `cached`, its pre-rendered answer. Never
        raises: a failure is logged and told."""
        try:
            answer = cached if cached is not None else self.answers.handle(text, dest.requester)
            if intro:
                answer = dataclasses.replace(
                    answer, summary=intro + ("\n\n" + answer.summary if answer.summary else ""))
            self.deliver(client, answer, dest, visible=self.is_visible(text, answer))
        except Exception:  # noqa: BLE001 - the user gets a reference, the log the details
            reference = uuid.uuid4().hex[:8]
            log.exception("answering %r in %s failed (reference %s)", text, dest.channel_id,
                          reference)
            message = (f"Something went wrong while answering `{text}`. Reference `{reference}` "
                       "— the details are in the bot's log.")
            try:
                self._ephemeral(client, dest, note_blocks(message), message)
            except Exception:  # noqa: BLE001
                log.exception("could not tell %s about reference %s", dest.user_id, reference)

    def first_time(self, event_id: str | None) -> bool:
        """False for an event id seen before (Slack retries events it thinks were lost)."""
        if not event_id:
            return True
        with self._seen_lock:
            if event_id in self._seen:
                return False
            self._seen[event_id] = None
            while len(self._seen) > 5000:
                self._seen.popitem(last=False)
        return True

    def shutdown(self, wait: bool = True) -> None:
        self.replies.shutdown(wait=wait)
        self.pool.shutdown(wait=wait)
        if self.answers.processes is not None:
            self.answers.processes.shutdown()

    # --- deciding and posting -------------------------------------------------------------

    def command_name(self, text: str) -> str | None:
        """The canonical command a text runs ("/pulse churn-risk SP" → "churn-risk")."""
        cmd = self.router.resolve(text)[1]
        return cmd.name if cmd else None

    def is_visible(self, text: str, answer: Answer) -> bool:
        """In the channel for everyone, or only for the person who asked."""
        return not answer.is_error and self.command_name(text) in self.settings.in_channel_commands

    def deliver(self, client: WebClient, answer: Answer, dest: Destination, *, visible: bool) -> None:
        """Post `answer`: message, charts in its thread, export as a file, notes if refused."""
        notes: list[str] = []
        ts: str | None = None
        if visible or dest.direct:
            blocks = answer_blocks(answer, asked_by=None if dest.direct else dest.user_id,
                                   asked=None if dest.direct else dest.asked,
                                   currency=self.settings.currency)
            ts = self._post(client, dest, blocks, fallback_text(answer))
            if answer.charts:
                if ts is None:
                    notes.append("I answered through Slack's command reply, so I could not add "
                                 "the charts: invite me to this channel (`/invite @Retail Pulse`) "
                                 "to get them.")
                else:
                    self._share_charts(client, answer, dest, ts, notes)
        else:
            extra = []
            if answer.charts:
                n = len(answer.charts)
                extra.append(f"This answer has {n} chart{'s' if n > 1 else ''}; charts come "
                             "with answers posted in a channel.")
            blocks = answer_blocks(answer, extra_notes=extra, currency=self.settings.currency)
            self._ephemeral(client, dest, blocks, fallback_text(answer))
        if answer.export is not None:
            self._share_export(client, answer, dest, dest.thread_ts or ts, notes)
        if notes:
            text = "\n".join(notes)
            self._ephemeral(client, dest, note_blocks(text), text)

    def _post(self, client: WebClient, dest: Destination, blocks: list[dict[str, Any]],
              text: str) -> str | None:
        """chat.postMessage; the message ts, or None when it went through the response_url."""
        try:
            resp = client.chat_postMessage(channel=dest.channel_id, text=text, blocks=blocks,
                                           thread_ts=dest.thread_ts, unfurl_links=False,
                                           unfurl_media=False)
            return resp["ts"]
        except Exception as exc:
            # Not a member (private channel, DM between people): the command's own reply
            # channel still works everywhere the command was typed.
            if api_error(exc) in CHANNEL_REFUSALS and dest.response_url:
                log.info("posting in %s refused (%s); answering via response_url",
                         dest.channel_id, api_error(exc))
                post_response(dest.response_url, {"response_type": "in_channel", "text": text,
                                                  "blocks": blocks})
                return None
            raise

    def _ephemeral(self, client: WebClient, dest: Destination, blocks: list[dict[str, Any]],
                   text: str) -> None:
        """Only the asker sees it (in a DM with the bot, simply post)."""
        if dest.direct:
            client.chat_postMessage(channel=dest.channel_id, text=text, blocks=blocks,
                                    thread_ts=dest.thread_ts)
        elif dest.response_url:
            post_response(dest.response_url, {"response_type": "ephemeral",
                                              "replace_original": False,
                                              "text": text, "blocks": blocks})
        else:
            client.chat_postEphemeral(channel=dest.channel_id, user=dest.user_id, text=text,
                                      blocks=blocks, thread_ts=dest.thread_ts)

    def _share_charts(self, client: WebClient, answer: Answer, dest: Destination, ts: str,
                      notes: list[str]) -> None:
        files = [{"file": c.png, "filename": _filename(c.name, ".png"), "title": c.title,
                  "alt_txt": c.title[:1000] or c.name} for c in answer.charts]
        try:
            upload_files(client, files, channel=dest.channel_id, thread_ts=ts)
        except Exception as exc:  # noqa: BLE001 - the answer is out; say what is missing
            log.warning("chart upload to %s failed: %s", dest.channel_id, exc)
            notes.append(f"I could not add the chart{'s' if len(files) > 1 else ''} "
                         f"({api_error(exc) or 'upload failed'}).")

    def _share_export(self, client: WebClient, answer: Answer, dest: Destination,
                      thread_ts: str | None, notes: list[str]) -> None:
        export = answer.export
        assert export is not None
        who = f"<@{dest.user_id}> exported" if dest.user_id else "Export:"
        comment = f"{who} {export.rows:,} rows" + (f" — `{dest.asked}`" if dest.asked else "")
        try:
            upload_files(client, [{"file": export.content, "filename": export.filename,
                                   "title": export.filename}],
                         channel=dest.channel_id, thread_ts=thread_ts, initial_comment=comment)
        except Exception as exc:  # noqa: BLE001
            error = api_error(exc) or "upload failed"
            log.warning("export upload to %s refused: %s", dest.channel_id, error)
            hint = (" Invite me to this channel (`/invite @Retail Pulse`) or ask me in a DM."
                    if error in CHANNEL_REFUSALS else " Please try again in a minute.")
            notes.append(f"I could not share `{export.filename}` here ({error}).{hint}")


def _filename(name: str, suffix: str) -> str:
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "chart"
    return stem if stem.endswith(suffix) else stem + suffix
