"""Talking to Slack: the Web API client with retries, response_url posts, file uploads,
and a log filter that keeps tokens out of every log line."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryState,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.webhook import WebhookClient

log = logging.getLogger(__name__)

# Errors that mean "this channel will not take the bot's post" (not a fault to retry).
CHANNEL_REFUSALS = frozenset({
    "not_in_channel", "channel_not_found", "is_archived", "restricted_action",
    "cannot_dm_bot", "invalid_channel", "not_allowed_token_type", "ekm_access_denied",
    "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
})


class ServerErrorRetryHandler(RetryHandler):
    """Retries any 5xx answer (slack_sdk's own handler only retries 500 and 503)."""

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        return response is not None and 500 <= response.status_code < 600


def retry_handlers() -> list[RetryHandler]:
    """429 honouring Retry-After (3 tries more), 5xx with backoff (2 more), dropped connections."""
    backoff = BackoffRetryIntervalCalculator(backoff_factor=0.5)
    return [
        RateLimitErrorRetryHandler(max_retry_count=3),
        ServerErrorRetryHandler(max_retry_count=2, interval_calculator=backoff),
        ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=backoff),
    ]


def make_web_client(token: str | None, base_url: str, *, timeout: int = 30) -> WebClient:
    """A WebClient for `base_url` that retries rate limits, server errors and lost connections."""
    return WebClient(token=token, base_url=base_url, timeout=timeout,
                     retry_handlers=retry_handlers(),
                     logger=logging.getLogger("slack_sdk.web.base_client"))


class ResponseUrlError(RuntimeError):
    """Slack refused a response_url post (after retries)."""

    def __init__(self, status: int, body: str):
        super().__init__(f"response_url answered {status}: {body[:200]}")
        self.status = status
        self.body = body


def post_response(url: str, payload: dict[str, Any], *, timeout: int = 30) -> None:
    """POST a message to a slash command's or button's response_url, with the same retries.

    Raises ResponseUrlError when Slack does not accept it.
    """
    client = WebhookClient(url=url, timeout=timeout, retry_handlers=retry_handlers())
    resp = client.send_dict(payload)
    if resp.status_code != 200:
        raise ResponseUrlError(resp.status_code, resp.body or "")


def upload_files(client: WebClient, files: Sequence[dict[str, Any]], *, channel: str,
                 thread_ts: str | None = None, initial_comment: str | None = None,
                 attempts: int = 3) -> None:
    """Share files (dicts of file/filename/title) into a channel, optionally in a thread.

    The API calls retry on their own; the raw upload step of files_upload_v2 does not, so
    the whole flow is retried when it fails — nothing is shared before its last step.
    """
    uploads = [dict(f) for f in files]
    for attempt in range(1, attempts + 1):
        try:
            client.files_upload_v2(file_uploads=[dict(f) for f in uploads], channel=channel,
                                   thread_ts=thread_ts, initial_comment=initial_comment)
            return
        except (SlackRequestError, URLError, ConnectionError, TimeoutError) as exc:
            if attempt == attempts:
                raise
            log.warning("file upload to %s failed (%s); retrying", channel, exc)
            time.sleep(0.5 * 2 ** (attempt - 1))


def api_error(exc: BaseException) -> str | None:
    """Slack's error code of a SlackApiError ("not_in_channel"), else None."""
    if isinstance(exc, SlackApiError):
        try:
            return exc.response.get("error")
        except AttributeError:
            return None
    return None


# --- secrets never reach a log line ----------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_INSTALLED = False
REDACTED = "[redacted]"


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def protect_secrets(secrets: Iterable[str | None]) -> None:
    """Make sure none of `secrets` appears in any log record, from any library.

    Installs (once) a log-record factory that rewrites a record whose message or
    traceback contains a secret; handlers added later (pytest's too) are covered.
    """
    global _INSTALLED
    with _SECRETS_LOCK:
        _SECRETS.update(s for s in secrets if s and len(s) >= 8)
        if _INSTALLED:
            return
        _INSTALLED = True
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _SECRETS:
                _scrub(record)
            return record

        logging.setLogRecordFactory(factory)


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken format string is the logging module's to report
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        import traceback

        text = "".join(traceback.format_exception(*record.exc_info))
        clean = redact(text)
        if clean != text:
            record.exc_info, record.exc_text = None, clean.rstrip("\n")
