"""A local Slack Web API emulator for end-to-end tests (standard library only).

It serves the methods the bot uses, shaped and failing as Slack documents them, on
127.0.0.1 with a free port, so a real ``slack_sdk.WebClient(base_url=emu.base_url)``
can talk to it::

    with SlackEmulator(token="xoxb-test") as emu:
        client = WebClient(token="xoxb-test", base_url=emu.base_url)
        client.chat_postMessage(channel="#general", text="hi")
        assert emu.messages("C0GENERAL")[0].text == "hi"

Besides the Web API (``/api/<method>``) the same server takes the raw uploads of
``files.getUploadURLExternal`` (``/upload/v1/<ticket>``) and plays Slack's
``response_url`` (``/response/<name>``, see :meth:`SlackEmulator.response_url`).
Every request is recorded as a :class:`Call`; :meth:`SlackEmulator.fail_next` scripts
faults (HTTP 429 with ``Retry-After``, 5xx, ``ok: false`` errors, delays, dropped
connections).
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "API_METHODS",
    "RESPONSE_URL",
    "UPLOAD",
    "Call",
    "Channel",
    "Message",
    "Response",
    "SlackEmulator",
    "Upload",
    "User",
    "validate_blocks",
]

# Pseudo method names for the two non-API endpoints (for calls() and fail_next()).
UPLOAD = "upload"
RESPONSE_URL = "response_url"

MAX_BLOCKS = 50
MAX_MESSAGE_TEXT = 40_000
MAX_ATTACHMENTS = 100
MAX_MARKDOWN_TOTAL = 12_000
# files.completeUploadExternal checks channel_id against this (Slack's own pattern).
CHANNEL_ID_PATTERN = re.compile(r"^[CGDZ][A-Z0-9]{8,}$")

_SERVER_ERROR_HTML = (
    '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
    "<title>Server Error | Slack</title></head>\n<body><h1>Server Error</h1>"
    "<p>It seems like there's a problem connecting to our servers.</p></body>\n</html>"
)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Channel:
    """A conversation the workspace knows; ``members=None`` means every human user."""

    id: str
    name: str
    is_member: bool = True
    is_private: bool = False
    is_archived: bool = False
    members: frozenset[str] | None = None
    topic: str = ""
    purpose: str = ""


@dataclass(frozen=True)
class User:
    """A workspace member (minimal ``users.info`` shape)."""

    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False
    tz: str = "America/Sao_Paulo"
    tz_offset: int = -10800


@dataclass(frozen=True)
class Call:
    """One HTTP request the emulator received and what it answered."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    time: float
    status: int
    response: Any
    faulted: bool = False

    @property
    def ok(self) -> bool:
        return (
            self.status == 200
            and isinstance(self.response, dict)
            and bool(self.response.get("ok"))
        )


@dataclass(frozen=True)
class Message:
    """A message as it stands now (``history`` holds earlier versions after chat.update)."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None
    attachments: list[dict[str, Any]] | None = None
    ephemeral_user: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Upload:
    """A file shared through files.completeUploadExternal, with the bytes uploaded."""

    file_id: str
    filename: str
    title: str
    content: bytes
    length: int
    channel: str | None
    channels: tuple[str, ...]
    thread_ts: str | None
    initial_comment: str | None
    alt_txt: str | None = None
    snippet_type: str | None = None
    time: float = 0.0


@dataclass(frozen=True)
class Response:
    """A POST to a response_url; ``ok`` is False when Slack would have refused it."""

    name: str
    payload: Any
    status: int
    errors: tuple[str, ...]
    time: float

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def text(self) -> str | None:
        return self.payload.get("text") if isinstance(self.payload, dict) else None

    @property
    def blocks(self) -> list[dict[str, Any]] | None:
        return self.payload.get("blocks") if isinstance(self.payload, dict) else None

    @property
    def response_type(self) -> str:
        if isinstance(self.payload, dict):
            return self.payload.get("response_type") or "ephemeral"
        return "ephemeral"

    @property
    def replace_original(self) -> bool:
        return isinstance(self.payload, dict) and _truthy(self.payload.get("replace_original"))

    @property
    def delete_original(self) -> bool:
        return isinstance(self.payload, dict) and _truthy(self.payload.get("delete_original"))

    @property
    def thread_ts(self) -> str | None:
        return self.payload.get("thread_ts") if isinstance(self.payload, dict) else None


@dataclass
class _Fault:
    status: int
    error: str | None
    retry_after: int | None
    body: Any
    delay: float
    disconnect: bool


@dataclass
class _Ticket:
    file_id: str
    filename: str
    length: int
    alt_txt: str | None
    snippet_type: str | None
    content: bytes | None = None


_Params = dict[str, Any]


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# ------------------------------------------------------------------ block kit rules


def _ptr(path: str) -> str:
    return f"[json-pointer:{path}]"


def _check_len(value: Any, limit: int, path: str, errors: list[str]) -> None:
    if isinstance(value, str) and len(value) > limit:
        errors.append(f"must be less than {limit + 1} characters {_ptr(path)}")


def _text_object(
    obj: Any,
    path: str,
    errors: list[str],
    *,
    limit: int,
    plain_only: bool = False,
) -> None:
    if not isinstance(obj, dict):
        errors.append(f"must be an object {_ptr(path)}")
        return
    kind = obj.get("type")
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if kind is None:
        errors.append(f"missing required field: type {_ptr(path)}")
    elif kind not in allowed:
        errors.append(f"must be a valid enum value {_ptr(path + '/type')}")
    if "text" not in obj:
        errors.append(f"missing required field: text {_ptr(path)}")
        return
    text = obj["text"]
    if not isinstance(text, str):
        errors.append(f"must be a string {_ptr(path + '/text')}")
        return
    if not text:
        errors.append(f"must be more than 0 characters {_ptr(path + '/text')}")
    _check_len(text, limit, path + "/text", errors)


def _element(el: Any, path: str, errors: list[str]) -> None:
    """Interactive elements (button fully; others: type and action_id)."""
    if not isinstance(el, dict):
        errors.append(f"must be an object {_ptr(path)}")
        return
    kind = el.get("type")
    if kind is None:
        errors.append(f"missing required field: type {_ptr(path)}")
        return
    if "action_id" in el:
        _check_len(el["action_id"], 255, path + "/action_id", errors)
    if kind == "button":
        if "text" not in el:
            errors.append(f"missing required field: text {_ptr(path)}")
        else:
            _text_object(el["text"], path + "/text", errors, limit=75, plain_only=True)
        _check_len(el.get("value"), 2000, path + "/value", errors)
        _check_len(el.get("url"), 3000, path + "/url", errors)
        if "style" in el and el["style"] not in ("primary", "danger"):
            errors.append(f"must be a valid enum value {_ptr(path + '/style')}")
    elif kind == "image":
        if "image_url" not in el and "slack_file" not in el:
            errors.append(f"missing required field: image_url {_ptr(path)}")
        if "alt_text" not in el:
            errors.append(f"missing required field: alt_text {_ptr(path)}")


def _section(block: dict[str, Any], path: str, errors: list[str]) -> None:
    has_text = "text" in block
    fields = block.get("fields")
    if not has_text and not fields:
        errors.append(f"must define either `text` or `fields` {_ptr(path + '/type')}")
    if has_text:
        _text_object(block["text"], path + "/text", errors, limit=3000)
    if fields is not None:
        if not isinstance(fields, list):
            errors.append(f"must be an array {_ptr(path + '/fields')}")
        else:
            if len(fields) > 10:
                errors.append(f"no more than 10 items allowed {_ptr(path + '/fields')}")
            for j, fld in enumerate(fields):
                _text_object(fld, f"{path}/fields/{j}", errors, limit=2000)
    if "accessory" in block:
        _element(block["accessory"], path + "/accessory", errors)


def _elements(block: dict[str, Any], path: str, errors: list[str], limit: int) -> list[Any]:
    elements = block.get("elements")
    if elements is None:
        errors.append(f"missing required field: elements {_ptr(path)}")
        return []
    if not isinstance(elements, list):
        errors.append(f"must be an array {_ptr(path + '/elements')}")
        return []
    if not elements:
        errors.append(f"must provide at least 1 items {_ptr(path + '/elements')}")
    if len(elements) > limit:
        errors.append(f"no more than {limit} items allowed {_ptr(path + '/elements')}")
    return elements


def _block(block: Any, path: str, errors: list[str], markdown_total: list[int]) -> None:
    if not isinstance(block, dict):
        errors.append(f"failed to match all allowed schemas {_ptr(path)}")
        return
    kind = block.get("type")
    if kind is None:
        errors.append(f"missing required field: type {_ptr(path)}")
        return
    if kind == "section":
        _section(block, path, errors)
    elif kind == "header":
        if "text" not in block:
            errors.append(f"missing required field: text {_ptr(path)}")
        else:
            _text_object(block["text"], path + "/text", errors, limit=150, plain_only=True)
    elif kind == "context":
        for j, el in enumerate(_elements(block, path, errors, 10)):
            el_path = f"{path}/elements/{j}"
            if isinstance(el, dict) and el.get("type") == "image":
                _element(el, el_path, errors)
            else:
                _text_object(el, el_path, errors, limit=3000)
    elif kind == "actions":
        seen: set[str] = set()
        for j, el in enumerate(_elements(block, path, errors, 25)):
            _element(el, f"{path}/elements/{j}", errors)
            action_id = el.get("action_id") if isinstance(el, dict) else None
            if action_id is not None:
                if action_id in seen:
                    errors.append(
                        f"action_id must be unique within the block "
                        f"{_ptr(f'{path}/elements/{j}/action_id')}"
                    )
                seen.add(action_id)
    elif kind == "image":
        if "image_url" not in block and "slack_file" not in block:
            errors.append(f"missing required field: image_url {_ptr(path)}")
        _check_len(block.get("image_url"), 3000, path + "/image_url", errors)
        if "alt_text" not in block:
            errors.append(f"missing required field: alt_text {_ptr(path)}")
        _check_len(block.get("alt_text"), 2000, path + "/alt_text", errors)
        if "title" in block:
            _text_object(block["title"], path + "/title", errors, limit=2000, plain_only=True)
    elif kind == "markdown":
        text = block.get("text")
        if not isinstance(text, str):
            errors.append(f"missing required field: text {_ptr(path)}")
        else:
            markdown_total[0] += len(text)
            if markdown_total[0] > MAX_MARKDOWN_TOTAL:
                errors.append(
                    f"markdown blocks must be less than {MAX_MARKDOWN_TOTAL + 1} "
                    f"characters in total {_ptr(path + '/text')}"
                )
    elif kind == "rich_text":
        _elements(block, path, errors, 10**6)
    elif kind in ("divider", "file", "video", "table"):
        pass
    else:
        errors.append(f"failed to match all allowed schemas {_ptr(path)}")


def validate_blocks(blocks: Any) -> list[str]:
    """Slack's complaints about a message's ``blocks`` (empty list when valid).

    Covers the rules Retail Pulse leans on: at most 50 blocks; section text 3,000 chars,
    at most 10 fields of 2,000; header plain_text 150; context at most 10 elements;
    actions at most 25 elements; button text plain_text 75; action_id 255; text objects
    typed plain_text/mrkdwn and non-empty; block_id at most 255 and unique. Messages
    follow Slack's wording, e.g. ``must be less than 3001 characters
    [json-pointer:/blocks/0/text/text]``.
    """
    if not isinstance(blocks, list):
        return [f"must be an array {_ptr('/blocks')}"]
    if len(blocks) > MAX_BLOCKS:
        return [f"no more than {MAX_BLOCKS} items allowed {_ptr('/blocks')}"]
    errors: list[str] = []
    block_ids: set[str] = set()
    markdown_total = [0]
    for i, block in enumerate(blocks):
        path = f"/blocks/{i}"
        _block(block, path, errors, markdown_total)
        if isinstance(block, dict) and "block_id" in block:
            block_id = block["block_id"]
            if not isinstance(block_id, str):
                errors.append(f"must be a string {_ptr(path + '/block_id')}")
                continue
            _check_len(block_id, 255, path + "/block_id", errors)
            if block_id in block_ids:
                errors.append(f"Block ID needs to be unique {_ptr(path + '/block_id')}")
            block_ids.add(block_id)
    return errors


# ------------------------------------------------------------------------- helpers


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


_JSON_PARAMS = ("blocks", "attachments", "metadata", "files")


def _decode_json_params(params: dict[str, Any]) -> set[str]:
    """Parse the JSON-string arguments form bodies carry; return the names that failed."""
    bad: set[str] = set()
    for name in _JSON_PARAMS:
        value = params.get(name)
        if isinstance(value, str):
            try:
                params[name] = json.loads(value)
            except ValueError:
                bad.add(name)
    return bad


def _parse_multipart(content_type: str, body: bytes) -> list[tuple[str | None, str | None, bytes]]:
    """(field name, filename, payload) for each part of a multipart/form-data body."""
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = []
    if message.is_multipart():
        for part in message.iter_parts():
            payload = part.get_payload(decode=True) or b""
            parts.append((part.get_param("name", header="content-disposition"),
                          part.get_filename(), payload))
    return parts


# ------------------------------------------------------------------------ emulator


API_METHODS = (
    "auth.test",
    "chat.postMessage",
    "chat.postEphemeral",
    "chat.update",
    "files.getUploadURLExternal",
    "files.completeUploadExternal",
    "conversations.info",
    "conversations.join",
    "conversations.list",
    "users.info",
)


class SlackEmulator:
    """A Slack Web API emulator on 127.0.0.1 (see the module docstring).

    Args:
        token: the only bot token accepted (``Authorization: Bearer``, or ``token`` in a
            form body as Slack allows); absent -> ``not_authed``, other -> ``invalid_auth``.
        channels: the workspace's conversations; default ``#general`` (``C0GENERAL``, bot
            a member), ``#random`` (``C0RANDOM01``, not a member), private ``#leads``
            (``G0LEADS01``, not a member).
        users: the human users (``User`` objects or an id -> name mapping); default
            ``U0ALICE01`` alice and ``U0BOB0001`` bob. The bot user is always added.
        team_id, team, bot_user_id, bot_id, app_id, bot_name: identities auth.test reports.
        start_ts: seconds of the first message ts; each later ts is 100 microseconds on.
    """

    def __init__(
        self,
        *,
        token: str = "xoxb-test-token",
        channels: Iterable[Channel] | None = None,
        users: Iterable[User] | Mapping[str, str] | None = None,
        team_id: str = "T0PULSE01",
        team: str = "Retail Pulse Test",
        bot_user_id: str = "U0PULSEBOT",
        bot_id: str = "B0PULSEBOT",
        app_id: str = "A0PULSEAPP",
        bot_name: str = "retail-pulse",
        start_ts: int = 1_700_000_000,
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
        self.team_id = team_id
        self.team = team
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_name = bot_name
        self.host = host
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        if channels is None:
            channels = [
                Channel("C0GENERAL", "general", is_member=True),
                Channel("C0RANDOM01", "random", is_member=False),
                Channel("G0LEADS01", "leads", is_member=False, is_private=True),
            ]
        self._channels: dict[str, Channel] = {c.id: c for c in channels}
        if users is None:
            users = {"U0ALICE01": "alice", "U0BOB0001": "bob"}
        if isinstance(users, Mapping):
            users = [User(uid, name, real_name=name.title()) for uid, name in users.items()]
        self._users: dict[str, User] = {u.id: u for u in users}
        self._users[bot_user_id] = User(bot_user_id, bot_name, real_name=bot_name, is_bot=True)
        self._ts_counter = itertools.count(1)
        self._ts_base_us = start_ts * 1_000_000
        self._file_counter = itertools.count(1)
        self._calls: list[Call] = []
        self._messages: list[Message] = []
        self._tickets: dict[str, _Ticket] = {}  # upload ticket -> pending file
        self._files: dict[str, _Ticket] = {}  # file id -> same objects
        self._uploads: list[Upload] = []
        self._responses: list[Response] = []
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle

    def start(self) -> SlackEmulator:
        """Bind a free port and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        emulator = self

        class Handler(_Handler):
            emu = emulator

        server = _Server((self.host, 0), Handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="slack-emulator", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (recordings stay readable)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> SlackEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("SlackEmulator is not started")
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``WebClient(base_url=...)``: ``http://127.0.0.1:PORT/api/``."""
        return f"{self.root_url}/api/"

    def response_url(self, name: str = "default") -> str:
        """A response_url that records what is POSTed to it under ``name``."""
        return f"{self.root_url}/response/{name}"

    # ---------------------------------------------------------- configuration

    def add_channel(self, channel: Channel) -> Channel:
        with self._lock:
            self._channels[channel.id] = channel
        return channel

    def add_user(self, user: User) -> User:
        with self._lock:
            self._users[user.id] = user
        return user

    def channel(self, ref: str) -> Channel:
        """The channel with this id or name (``#name`` or ``name``)."""
        found = self._resolve(ref)
        if found is None:
            raise KeyError(ref)
        return found

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        body: Any = None,
        delay: float = 0.0,
        disconnect: bool = False,
    ) -> None:
        """Script the next ``times`` requests to ``method`` to fail.

        ``method`` is an API method (``"chat.postMessage"``), ``"*"`` for any API
        method, or ``UPLOAD`` / ``RESPONSE_URL``. ``status`` defaults to 429 when
        ``retry_after`` is given, 200 when only ``error`` is given (an ``ok: false``
        answer) and 500 otherwise. 429 answers carry ``Retry-After`` (default 1) and
        ``{"ok": false, "error": "ratelimited"}``; 5xx answers carry Slack's HTML error
        page unless ``error`` or ``body`` is given. ``delay`` sleeps first (alone it
        just slows a normal answer); ``disconnect`` closes the socket without answering.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if status is None:
            if retry_after is not None:
                status = 429
            elif error is not None or disconnect or (delay and body is None):
                status = 200
            else:
                status = 500
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
            error = error or "ratelimited"
        fault = _Fault(status, error, retry_after, body, delay, disconnect)
        with self._lock:
            self._faults[method].extend(copy.copy(fault) for _ in range(times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget recorded calls, messages, uploads, responses and scripted faults."""
        with self._lock:
            self._calls.clear()
            self._messages.clear()
            self._uploads.clear()
            self._responses.clear()
            self._tickets.clear()
            self._files.clear()
            self._faults.clear()

    # ------------------------------------------------------------ inspection

    def calls(self, method: str | None = None) -> list[Call]:
        """Every recorded request (to ``method`` only, when given), oldest first."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def messages(
        self, channel: str | None = None, *, thread_ts: str | None = None
    ) -> list[Message]:
        """Messages posted (as they stand after updates), oldest first; no ephemerals."""
        return self._select_messages(channel, thread_ts, ephemeral=False)

    def ephemerals(self, channel: str | None = None, *, user: str | None = None) -> list[Message]:
        """Messages sent with chat.postEphemeral."""
        found = self._select_messages(channel, None, ephemeral=True)
        return [m for m in found if user is None or m.ephemeral_user == user]

    def uploads(self, channel: str | None = None) -> list[Upload]:
        """Files completed with files.completeUploadExternal, with their bytes."""
        cid = self._channel_id_for_filter(channel)
        with self._lock:
            return [u for u in self._uploads if cid is None or cid in u.channels]

    def responses(self, name: str | None = None) -> list[Response]:
        """POSTs to response URLs (valid or not: see ``Response.ok``), oldest first."""
        with self._lock:
            return [r for r in self._responses if name is None or r.name == name]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy and return it; TimeoutError otherwise.

        The predicate is re-checked whenever a request is recorded (and every 50 ms).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self._changed.wait(min(remaining, 0.05))

    # ------------------------------------------------------------- internals

    def _select_messages(
        self, channel: str | None, thread_ts: str | None, *, ephemeral: bool
    ) -> list[Message]:
        cid = self._channel_id_for_filter(channel)
        with self._lock:
            return [
                m for m in self._messages
                if (m.ephemeral_user is not None) == ephemeral
                and (cid is None or m.channel == cid)
                and (thread_ts is None or m.thread_ts == thread_ts)
            ]

    def _channel_id_for_filter(self, channel: str | None) -> str | None:
        if channel is None:
            return None
        found = self._resolve(channel)
        return found.id if found is not None else channel

    def _resolve(self, ref: Any, *, names: bool = True) -> Channel | None:
        if not isinstance(ref, str) or not ref:
            return None
        with self._lock:
            if ref in self._channels:
                return self._channels[ref]
            if ref.startswith("D") or names:
                dm = self._dm_for(ref)
                if dm is not None:
                    return dm
            if names:
                name = ref[1:] if ref.startswith("#") else ref
                for ch in self._channels.values():
                    if ch.name == name:
                        return ch
        return None

    def _dm_for(self, ref: str) -> Channel | None:
        """The bot's direct-message conversation with a user, by its D-id or the user id."""
        for user in self._users.values():
            if user.is_bot:
                continue
            dm_id = "D" + user.id[1:]
            if ref == dm_id or (ref == user.id and ref[0] in "UW"):
                return Channel(dm_id, user.id, is_member=True, is_private=True,
                               members=frozenset({user.id}))
        return None

    def _next_ts(self) -> str:
        micros = self._ts_base_us + next(self._ts_counter) * 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _record(self, call: Call) -> None:
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()

    def _take_fault(self, method: str, api: bool) -> _Fault | None:
        with self._lock:
            for key in (method, "*") if api else (method,):
                queue = self._faults.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _channel_json(self, ch: Channel) -> dict[str, Any]:
        is_im = ch.id.startswith("D")
        return {
            "id": ch.id,
            "name": ch.name,
            "is_channel": not ch.is_private and not is_im,
            "is_group": ch.is_private and not is_im,
            "is_im": is_im,
            "is_mpim": False,
            "is_private": ch.is_private,
            "created": 1_600_000_000,
            "is_archived": ch.is_archived,
            "is_general": ch.name == "general",
            "unlinked": 0,
            "name_normalized": ch.name,
            "is_shared": False,
            "is_org_shared": False,
            "is_ext_shared": False,
            "is_pending_ext_shared": False,
            "context_team_id": self.team_id,
            "creator": next(iter(self._users)),
            "is_member": ch.is_member,
            "topic": {"value": ch.topic, "creator": "", "last_set": 0},
            "purpose": {"value": ch.purpose, "creator": "", "last_set": 0},
            "previous_names": [],
        }

    def _message_json(self, msg: Message) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user": self.bot_user_id,
            "type": "message",
            "ts": msg.ts,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": msg.text or "",
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id, "app_id": self.app_id, "name": self.bot_name,
                "deleted": False, "team_id": self.team_id,
            },
        }
        if msg.blocks is not None:
            out["blocks"] = msg.blocks
        if msg.attachments is not None:
            out["attachments"] = msg.attachments
        if msg.thread_ts is not None:
            out["thread_ts"] = msg.thread_ts
            out["parent_user_id"] = self.bot_user_id
        return out

    # ------------------------------------------------------------ API methods

    def _authenticate(
        self, headers: Mapping[str, str], params: dict[str, Any], is_json: bool
    ) -> None:
        token = None
        auth = headers.get("Authorization") or headers.get("authorization")
        if auth and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        elif not is_json and isinstance(params.get("token"), str):
            token = params["token"]  # Slack accepts a POST parameter, never in JSON bodies
        if not token:
            raise _ApiError("not_authed")
        if token != self.token:
            raise _ApiError("invalid_auth")

    def _api(self, method: str, params: dict[str, Any], bad_json: set[str]) -> dict[str, Any]:
        handler = getattr(self, "_m_" + method.replace(".", "_"))
        return handler(params, bad_json)

    def _m_auth_test(self, params: _Params, bad: set[str]) -> _Params:
        return {
            "ok": True,
            "url": "https://retail-pulse-test.slack.com/",
            "team": self.team,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _postable(self, ref: Any) -> Channel:
        ch = self._resolve(ref)
        if ch is None:
            raise _ApiError("channel_not_found")
        if ch.is_archived:
            raise _ApiError("is_archived")
        if not ch.is_member:
            raise _ApiError("not_in_channel")
        return ch

    def _content(self, params: dict[str, Any], bad: set[str]) -> tuple[Any, Any, Any]:
        """Validated (text, blocks, attachments) of a message, Slack's errors otherwise."""
        if "blocks" in bad:
            raise _ApiError("invalid_blocks_format")
        if "attachments" in bad:
            raise _ApiError("invalid_attachments")
        text, blocks = params.get("text"), params.get("blocks")
        attachments = params.get("attachments")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise _ApiError("invalid_blocks_format")
            errors = validate_blocks(blocks)
            if errors:
                raise _ApiError(
                    "invalid_blocks", errors=errors,
                    response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                )
        if attachments is not None:
            if not isinstance(attachments, list):
                raise _ApiError("invalid_attachments")
            if len(attachments) > MAX_ATTACHMENTS:
                raise _ApiError("too_many_attachments")
        if not text and not blocks and not attachments:
            raise _ApiError("no_text")
        if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
            raise _ApiError("msg_too_long")
        return text, blocks, attachments

    def _m_chat_postMessage(self, params: _Params, bad: set[str]) -> _Params:
        ch = self._postable(params.get("channel"))
        text, blocks, attachments = self._content(params, bad)
        with self._lock:
            msg = Message(
                channel=ch.id, ts=self._next_ts(), text=text, blocks=blocks,
                thread_ts=params.get("thread_ts") or None, attachments=attachments,
                params=params,
            )
            self._messages.append(msg)
        return {"ok": True, "channel": ch.id, "ts": msg.ts, "message": self._message_json(msg)}

    def _m_chat_postEphemeral(self, params: _Params, bad: set[str]) -> _Params:
        ch = self._postable(params.get("channel"))
        user = params.get("user")
        members = ch.members if ch.members is not None else {
            u.id for u in self._users.values() if not u.is_bot
        }
        if user not in self._users or user not in members:
            raise _ApiError("user_not_in_channel")
        text, blocks, attachments = self._content(params, bad)
        with self._lock:
            msg = Message(
                channel=ch.id, ts=self._next_ts(), text=text, blocks=blocks,
                thread_ts=params.get("thread_ts") or None, attachments=attachments,
                ephemeral_user=user, params=params,
            )
            self._messages.append(msg)
        return {"ok": True, "message_ts": msg.ts}

    def _m_chat_update(self, params: _Params, bad: set[str]) -> _Params:
        ch = self._resolve(params.get("channel"))
        if ch is None:
            raise _ApiError("channel_not_found")
        ts = params.get("ts")
        with self._lock:
            index = next(
                (i for i, m in enumerate(self._messages)
                 if m.channel == ch.id and m.ts == ts and m.ephemeral_user is None),
                None,
            )
            if index is None:
                raise _ApiError("message_not_found")
            text, blocks, attachments = self._content(params, bad)
            old = self._messages[index]
            new = replace(
                old,
                text=text if "text" in params else old.text,
                # Slack keeps the previous blocks when none are sent.
                blocks=blocks if "blocks" in params else old.blocks,
                attachments=attachments if "attachments" in params else old.attachments,
                params=params,
                history=(*old.history, {"text": old.text, "blocks": old.blocks,
                                        "attachments": old.attachments}),
            )
            self._messages[index] = new
        return {
            "ok": True, "channel": ch.id, "ts": new.ts, "text": new.text or "",
            "message": self._message_json(new),
        }

    def _m_files_getUploadURLExternal(self, params: _Params, bad: set[str]) -> _Params:
        filename = params.get("filename")
        length = params.get("length")
        missing = [n for n, v in (("filename", filename), ("length", length)) if v in (None, "")]
        if missing:
            messages = [f"[ERROR] missing required field: {n}" for n in missing]
            raise _ApiError("invalid_arguments", response_metadata={"messages": messages})
        try:
            size = int(length)
        except (TypeError, ValueError):
            raise _ApiError(
                "invalid_arguments",
                response_metadata={
                    "messages": ["[ERROR] must be an integer [json-pointer:/length]"]},
            ) from None
        if size <= 0:
            raise _ApiError("missing_argument")  # Slack's answer to length 0
        with self._lock:
            file_id = f"F{next(self._file_counter):09d}"
            ticket_id = base64.urlsafe_b64encode(f"ticket:{file_id}".encode()).decode().rstrip("=")
            ticket = _Ticket(file_id, str(filename), size, params.get("alt_txt"),
                             params.get("snippet_type"))
            self._tickets[ticket_id] = ticket
            self._files[file_id] = ticket
        return {"ok": True, "upload_url": f"{self.root_url}/upload/v1/{ticket_id}",
                "file_id": file_id}

    def _m_files_completeUploadExternal(self, params: _Params, bad: set[str]) -> _Params:
        files = params.get("files")
        if "files" in bad or not isinstance(files, list) or not files:
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: files"]},
            )
        targets: list[Channel] = []
        refs: list[str] = []
        if params.get("channel_id"):
            refs.append(params["channel_id"])
        if params.get("channels"):
            refs.extend(c.strip() for c in str(params["channels"]).split(",") if c.strip())
        for ref in refs:
            ch = self._resolve(ref, names=False)
            if ch is None:
                if not CHANNEL_ID_PATTERN.match(ref):
                    raise _ApiError("invalid_arguments", response_metadata={"messages": [
                        "[ERROR] input must match regex pattern: ^[CGDZ][A-Z0-9]{8,}$ "
                        "[json-pointer:/channel_id]"]})
                raise _ApiError("invalid_channel")
            if ch.is_archived:
                raise _ApiError("is_archived")
            if not ch.is_member:
                raise _ApiError("not_in_channel")
            targets.append(ch)
        now = time.time()
        out = []
        with self._lock:
            items = []
            for item in files:
                file_id = item.get("id") if isinstance(item, dict) else None
                ticket = self._files.get(file_id) if isinstance(file_id, str) else None
                if ticket is None or ticket.content is None:
                    raise _ApiError("file_not_found")
                items.append((item, ticket))
            for item, ticket in items:
                title = item.get("title") or ticket.filename
                upload = Upload(
                    file_id=ticket.file_id, filename=ticket.filename, title=title,
                    content=ticket.content or b"", length=ticket.length,
                    channel=targets[0].id if targets else None,
                    channels=tuple(ch.id for ch in targets),
                    thread_ts=params.get("thread_ts") or None,
                    initial_comment=params.get("initial_comment"),
                    alt_txt=ticket.alt_txt, snippet_type=ticket.snippet_type, time=now,
                )
                self._uploads.append(upload)
                out.append(self._file_json(upload))
        return {"ok": True, "files": out}

    def _file_json(self, up: Upload) -> dict[str, Any]:
        base = f"https://files.slack.com/files-pri/{self.team_id}-{up.file_id}"
        return {
            "id": up.file_id,
            "created": int(up.time),
            "timestamp": int(up.time),
            "name": up.filename,
            "title": up.title,
            "mimetype": "",
            "filetype": "",
            "pretty_type": "",
            "user": self.bot_user_id,
            "user_team": self.team_id,
            "editable": False,
            "size": len(up.content),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{base}/{up.filename}",
            "url_private_download": f"{base}/download/{up.filename}",
            "permalink": (f"https://retail-pulse-test.slack.com/files/"
                          f"{self.bot_user_id}/{up.file_id}/{up.filename}"),
            "comments_count": 0,
            "is_starred": False,
            # Slack shares asynchronously: the completion answer lists no channels yet.
            "shares": {},
            "channels": [],
            "groups": [],
            "ims": [],
            "has_more_shares": False,
            "has_rich_preview": False,
            "file_access": "visible",
        }

    def _m_conversations_info(self, params: _Params, bad: set[str]) -> _Params:
        ch = self._resolve(params.get("channel"), names=False)
        if ch is None or (ch.is_private and not ch.is_member):
            raise _ApiError("channel_not_found")
        return {"ok": True, "channel": self._channel_json(ch)}

    def _m_conversations_join(self, params: _Params, bad: set[str]) -> _Params:
        ch = self._resolve(params.get("channel"), names=False)
        if ch is None or (ch.is_private and not ch.is_member):
            raise _ApiError("channel_not_found")
        if ch.is_private or ch.id.startswith("D"):
            raise _ApiError("method_not_supported_for_channel_type")
        if ch.is_archived:
            raise _ApiError("is_archived")
        if ch.is_member:
            return {
                "ok": True, "channel": self._channel_json(ch), "warning": "already_in_channel",
                "response_metadata": {"warnings": ["already_in_channel"]},
            }
        joined = replace(ch, is_member=True)
        with self._lock:
            self._channels[ch.id] = joined
        return {"ok": True, "channel": self._channel_json(joined)}

    def _m_conversations_list(self, params: _Params, bad: set[str]) -> _Params:
        types = {t.strip() for t in str(params.get("types") or "public_channel").split(",")}
        exclude_archived = _truthy(params.get("exclude_archived", False))
        try:
            limit = int(params.get("limit") or 100)
        except ValueError:
            raise _ApiError("invalid_limit") from None
        limit = max(1, min(limit, 1000))
        offset = 0
        cursor = params.get("cursor")
        if cursor:
            try:
                kind, _, value = base64.b64decode(cursor).decode().partition(":")
                offset = int(value)
                if kind != "offset":
                    raise ValueError(kind)
            except ValueError:
                raise _ApiError("invalid_cursor") from None
        with self._lock:
            listed = [
                ch for ch in self._channels.values()
                if not (exclude_archived and ch.is_archived)
                and (("private_channel" in types and ch.is_private and ch.is_member)
                     or ("public_channel" in types and not ch.is_private))
            ]
        page = listed[offset:offset + limit]
        next_offset = offset + limit
        next_cursor = (
            base64.b64encode(f"offset:{next_offset}".encode()).decode()
            if next_offset < len(listed) else ""
        )
        return {
            "ok": True,
            "channels": [self._channel_json(ch) for ch in page],
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _m_users_info(self, params: _Params, bad: set[str]) -> _Params:
        user = self._users.get(params.get("user") or "")
        if user is None:
            raise _ApiError("user_not_found")
        return {"ok": True, "user": {
            "id": user.id,
            "team_id": self.team_id,
            "name": user.name,
            "deleted": False,
            "real_name": user.real_name or user.name,
            "tz": user.tz,
            "tz_offset": user.tz_offset,
            "is_admin": False,
            "is_owner": False,
            "is_bot": user.is_bot,
            "is_app_user": False,
            "profile": {
                "real_name": user.real_name or user.name,
                "display_name": user.name,
                "team": self.team_id,
            },
        }}

    # --------------------------------------------------- upload / response_url

    def _upload(self, ticket_id: str, content_type: str, body: bytes) -> tuple[int, str]:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None:
                return 404, "file_not_found"
            data = body
            if content_type.lower().startswith("multipart/form-data"):
                parts = _parse_multipart(content_type, body)
                with_file = [p for p in parts if p[1] is not None]
                chosen = with_file or [p for p in parts if p[0] in ("file", "filename")]
                if not chosen:
                    return 400, "invalid_upload"
                data = chosen[0][2]
            ticket.content = data
            return 200, f"OK - {len(data)}"

    def _respond(self, name: str, body: bytes) -> tuple[int, str, Any, tuple[str, ...]]:
        try:
            payload = json.loads(body.decode("utf-8"))
        except ValueError:
            return 400, "invalid_payload", body.decode("utf-8", "replace"), ()
        if not isinstance(payload, dict):
            return 400, "invalid_payload", payload, ()
        if _truthy(payload.get("delete_original")):
            return 200, "ok", payload, ()
        blocks = payload.get("blocks")
        if blocks is not None:
            errors = tuple(validate_blocks(blocks))
            if errors:
                return 400, "invalid_blocks", payload, errors
        if not payload.get("text") and not blocks and not payload.get("attachments"):
            return 400, "no_text", payload, ()
        text = payload.get("text")
        if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
            return 400, "msg_too_long", payload, ()
        return 200, "ok", payload, ()


# ------------------------------------------------------------------ HTTP handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connects when clients fan out


class _Handler(BaseHTTPRequestHandler):
    emu: SlackEmulator
    protocol_version = "HTTP/1.1"
    server_version = "SlackEmulator/1.0"
    timeout = 30  # an idle keep-alive connection must not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        self._dispatch(self._read_body())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        headers = dict(self.headers.items())
        if path.startswith("/api/"):
            self._api(path[len("/api/"):], parts.query, headers, body)
        elif path.startswith("/upload/v1/"):
            self._plain(UPLOAD, path[len("/upload/v1/"):], headers, body)
        elif path.startswith("/response/"):
            self._plain(RESPONSE_URL, path[len("/response/"):], headers, body)
        else:
            self._send(404, b"not found", "text/plain; charset=utf-8")

    def _apply_fault(
        self, fault: _Fault, json_body: bool, record: Callable[[int, Any], None]
    ) -> bool:
        """Serve a scripted fault (recording it first); False when it only delayed."""
        if fault.delay:
            time.sleep(fault.delay)
        if fault.disconnect:
            record(0, None)
            self.close_connection = True
            return True
        if fault.status == 200 and fault.error is None and fault.body is None:
            return False
        headers = {}
        if fault.status == 429:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.body is not None:
            payload = fault.body
        elif fault.error is not None:
            payload = {"ok": False, "error": fault.error} if json_body else fault.error
        else:
            payload = _SERVER_ERROR_HTML
        record(fault.status, payload)
        if isinstance(payload, dict):
            self._send(fault.status, json.dumps(payload).encode(),
                       "application/json; charset=utf-8", headers)
        else:
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            kind = ("text/html; charset=utf-8" if payload is _SERVER_ERROR_HTML
                    else "text/plain; charset=utf-8")
            self._send(fault.status, raw, kind, headers)
        return True

    def _api(self, method: str, query: str, headers: dict[str, str], body: bytes) -> None:
        emu = self.emu
        content_type = headers.get("Content-Type") or headers.get("content-type") or ""
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        is_json = content_type.lower().startswith("application/json")
        status, response = 200, None
        try:
            if method not in API_METHODS:
                status = 404
                response = {"ok": False, "error": "unknown_method", "req_method": method}
            elif is_json and body:
                try:
                    decoded = json.loads(body.decode("utf-8"))
                except ValueError:
                    decoded = None
                if not isinstance(decoded, dict):
                    response = {"ok": False, "error": "invalid_json"}
                else:
                    params.update(decoded)
            elif content_type.lower().startswith("multipart/form-data"):
                for name, _filename, payload in _parse_multipart(content_type, body):
                    if name:
                        params[name] = payload.decode("utf-8", "replace")
            elif body:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except ValueError:
            response = {"ok": False, "error": "invalid_form_data"}
        bad = _decode_json_params(params)
        recorded = {k: v for k, v in params.items() if k != "token"}

        def record(code: int, answer: Any, faulted: bool = True) -> None:
            # Recorded before answering, so a client that has its answer sees the call.
            emu._record(Call(method, recorded, headers, time.time(), code, answer, faulted))

        fault = emu._take_fault(method, api=True) if response is None else None
        if fault is not None and self._apply_fault(fault, True, record):
            return
        if response is None:
            try:
                emu._authenticate(headers, params, is_json)
                response = emu._api(method, recorded, bad)
            except _ApiError as exc:
                response = {"ok": False, "error": exc.error, **exc.extra}
        record(status, response, faulted=False)
        self._send(status, json.dumps(response).encode(), "application/json; charset=utf-8")

    def _plain(self, kind: str, name: str, headers: dict[str, str], body: bytes) -> None:
        emu = self.emu
        fault = emu._take_fault(kind, api=False)
        content_type = headers.get("Content-Type") or headers.get("content-type") or ""
        params: dict[str, Any] = {"name": name, "content_type": content_type, "bytes": len(body)}
        def record(code: int, answer: Any, faulted: bool = True) -> None:
            emu._record(Call(kind, params, headers, time.time(), code, answer, faulted))

        if fault is not None and self._apply_fault(fault, False, record):
            return
        if kind == UPLOAD:
            status, text = emu._upload(name, content_type, body)
        else:
            status, text, payload, errors = emu._respond(name, body)
            params["payload"] = payload
            with emu._lock:
                emu._responses.append(Response(name, payload, status, errors, time.time()))
            if errors:
                params["errors"] = list(errors)
        record(status, text, faulted=False)
        self._send(status, text.encode(), "text/plain; charset=utf-8")
