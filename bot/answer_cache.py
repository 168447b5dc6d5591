"""Pre-rendered answers: every command's answer (figures, tables, PNG charts) kept in the
store's `answer_cache` table, so a command costs a lookup instead of queries and renders.

An entry is keyed by the normalised command text, the data version (the last load and
refresh), the as-of date and the settings that shape answers; a load or refresh changes the
version, so older entries are never served and the next warm-up deletes them. The entry is
what `Router.handle` returned for that text, stored only when it decodes back to an equal
Answer — a cached answer is the computed one. Several bot instances sharing a PostgreSQL
store share the entries.

`AnswerCache.handle` serves a hit, or computes (in one of a few process-wide render slots,
so renders never crowd out the threads that acknowledge Slack), stores and returns it.
`warm` pre-renders the default and common forms of every cacheable command after a refresh.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import shlex
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from bot.answers import Answer, Button, Chart, Export, Figure, Table
from bot.router import CommandContext, Requester, Router, _data_version, _known_places
from storage import schema
from storage.engine import brief_lock_wait

if TYPE_CHECKING:
    from bot.answer_processes import AnswerProcesses

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the payload layout or an answer's content changes meaning
WARM_SCOPES = ("all", "defaults", "none")
PLACE_USAGE = "STATE|REGION"
# Settings that never change an answer's content (who sees it, where it goes, secrets).
_NOT_IN_KEY = frozenset({
    "database_url", "output_dir", "slack_api_url", "slack_host", "slack_port",
    "in_channel_commands", "export_allowed_users", "export_allowed_channels", "admin_channel",
    "refresh_cron", "misfire_grace_seconds", "digests", "slack_bot_token",
    "slack_signing_secret", "slack_app_token",
})

# Process-wide: renders are CPU-bound under the GIL, so more at once only slows every thread.
RENDER_SLOTS = max(1, min(2, os.cpu_count() or 1))
_render_slots = threading.BoundedSemaphore(RENDER_SLOTS)


class NotCacheable(TypeError):
    """The answer holds a value the payload format cannot carry exactly."""


# --- payload: a zip of answer.json, one Arrow IPC file per table, the PNGs ---------------------


def _enc(value: Any) -> Any:
    """A JSON-safe, type-tagged form of a figure's raw value (exact round trip)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        return {"np": value.dtype.str, "v": _enc(value.item())}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"f": repr(value)}
    if isinstance(value, pd.Timestamp):
        return {"ts": value.isoformat()}
    if isinstance(value, dt.datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, pd.Period):
        return {"p": str(value), "freq": value.freqstr}
    if isinstance(value, list | tuple):
        return {"l" if isinstance(value, list) else "t": [_enc(v) for v in value]}
    raise NotCacheable(f"cannot store a {type(value).__name__}")


def _dec(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "np" in value:
        return np.dtype(value["np"]).type(_dec(value["v"]))
    if "f" in value:
        return float(value["f"])
    if "ts" in value:
        return pd.Timestamp(value["ts"])
    if "dt" in value:
        return dt.datetime.fromisoformat(value["dt"])
    if "d" in value:
        return dt.date.fromisoformat(value["d"])
    if "p" in value:
        return pd.Period(value["p"], freq=value["freq"])
    if "l" in value:
        return [_dec(v) for v in value["l"]]
    if "t" in value:
        return tuple(_dec(v) for v in value["t"])
    raise ValueError(f"unknown tagged value {sorted(value)}")


def _frame_bytes(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise NotCacheable(f"table not storable: {exc}") from None
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _frame_from(data: bytes) -> pd.DataFrame:
    import pyarrow as pa

    return pa.ipc.open_file(pa.BufferReader(data)).read_all().to_pandas()


def encode_answer(answer: Answer) -> bytes:
    """The answer as bytes; NotCacheable when a value has no exact stored form."""
    head: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "command": answer.command, "title": answer.title, "kind": answer.kind,
        "as_of": _enc(answer.as_of), "as_of_note": answer.as_of_note,
        "filter_label": answer.filter_label, "summary": answer.summary,
        "figures": [[f.label, f.value, _enc(f.raw)] for f in answer.figures],
        "tables": [[t.title, t.note, t.formats] for t in answer.tables],
        "charts": [[c.name, c.title] for c in answer.charts],
        "notes": list(answer.notes),
        "buttons": [[b.label, b.command, b.action_id] for b in answer.buttons],
        "export": ([answer.export.filename, answer.export.rows, list(answer.export.columns)]
                   if answer.export else None),
        "reference": answer.reference,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("answer.json", json.dumps(head, ensure_ascii=False))
        for i, t in enumerate(answer.tables):
            if not isinstance(t.frame, pd.DataFrame):
                raise NotCacheable("a table without a frame")
            zf.writestr(f"table-{i}.arrow", _frame_bytes(t.frame))
        for i, c in enumerate(answer.charts):
            zf.writestr(f"chart-{i}.png", c.png)
        if answer.export is not None:
            zf.writestr("export.bin", answer.export.content)
    return buf.getvalue()


def decode_answer(data: bytes) -> Answer:
    """The Answer `encode_answer` wrote."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        head = json.loads(zf.read("answer.json"))
        if head.get("format") != CACHE_FORMAT:
            raise ValueError(f"payload format {head.get('format')} is not {CACHE_FORMAT}")
        tables = [Table(title, _frame_from(zf.read(f"table-{i}.arrow")), note=note, formats=fmts)
                  for i, (title, note, fmts) in enumerate(head["tables"])]
        charts = [Chart(name, title, zf.read(f"chart-{i}.png"))
                  for i, (name, title) in enumerate(head["charts"])]
        export = None
        if head["export"] is not None:
            filename, rows, columns = head["export"]
            export = Export(filename, zf.read("export.bin"), rows, tuple(columns))
    return Answer(
        command=head["command"], title=head["title"], kind=head["kind"],
        as_of=_dec(head["as_of"]), as_of_note=head["as_of_note"],
        filter_label=head["filter_label"], summary=head["summary"],
        figures=[Figure(label, value, _dec(raw)) for label, value, raw in head["figures"]],
        tables=tables, charts=charts, notes=head["notes"],
        buttons=[Button(*b) for b in head["buttons"]], export=export,
        reference=head["reference"],
    )


def _same_value(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, pd.DataFrame):
        return (list(a.columns) == list(b.columns) and a.index.equals(b.index)
                and list(a.dtypes) == list(b.dtypes) and a.equals(b))
    if isinstance(a, float | np.floating) and np.isnan(a):
        return bool(np.isnan(b))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return all(_same_value(getattr(a, f.name), getattr(b, f.name))
                   for f in dataclasses.fields(a))
    return bool(a == b)


def same_answer(a: Answer, b: Answer) -> bool:
    """Equal in every field: types, table frames (values, dtypes, index), chart bytes."""
    return _same_value(a, b)


# --- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheKey:
    text: str  # normalised command text ("kpis sp")
    version: str  # the data version the answer is of
    key: str  # what the row is stored under


@dataclass
class WarmReport:
    """What a warm-up did."""

    rendered: int = 0
    already: int = 0
    skipped: list[str] = field(default_factory=list)  # errors, or answers with no stored form
    pruned: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def line(self) -> str:
        extra = f", {len(self.skipped)} not cached" if self.skipped else ""
        stop = " (stopped early)" if self.stopped_early else ""
        return (f"answers pre-rendered: {self.rendered} new, {self.already} already cached"
                f"{extra}, {self.pruned} outdated removed, in {self.seconds:.1f} s{stop}")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retail-pulse")
    except PackageNotFoundError:
        return "dev"


def settings_fingerprint(settings: Any) -> str:
    """The settings that shape answers' content, as a stable string."""
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
              if f.name not in _NOT_IN_KEY}
    return json.dumps(fields, sort_keys=True, default=str)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class AnswerCache:
    """Serves the router's answers from the store's `answer_cache`, computing misses."""

    def __init__(self, router: Router, *, memory_items: int = 64):
        self.router = router
        self.engine: Engine = router.engine
        self._fingerprint = settings_fingerprint(router.settings)
        self._package = _package_version()
        self._memory: OrderedDict[str, Answer] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()
        self._flights: dict[str, threading.Lock] = {}
        self.enabled = _ensure_table(self.engine)
        # where misses are computed off this process (bot/answer_processes.py), if anywhere
        self.processes: AnswerProcesses | None = None

    # --- keys ----------------------------------------------------------------------------

    def version(self) -> str:
        return _digest(str(CACHE_FORMAT), self._package, _data_version(self.engine))[:32]

    def key_for(self, text: str) -> CacheKey | None:
        """The key of a cacheable command text, or None (unknown command, export, help…)."""
        name, cmd, args = self.router.resolve(text)
        if cmd is None or not cmd.cacheable or not self.enabled:
            return None
        # Every command reads its arguments case-insensitively (lower-cased, as places are);
        # quoting stays in the key because it groups words ("segment 'at risk'" is not
        # "segment at risk").
        norm = shlex.join([cmd.name, *(" ".join(a.split()).lower() for a in args)])
        ctx = CommandContext(self.engine, self.router.settings, command=cmd.name)
        version = self.version()
        return CacheKey(norm, version, _digest(version, norm, repr(ctx.as_of()), self._fingerprint))

    # --- reading and writing ---------------------------------------------------------------

    def lookup(self, key: CacheKey) -> Answer | None:
        with self._lock:
            hit = self._memory.get(key.key)
            if hit is not None:
                self._memory.move_to_end(key.key)
                return hit
        t = schema.answer_cache
        try:
            with self.engine.connect() as conn:
                payload = conn.execute(select(t.c.payload).where(t.c.cache_key == key.key)).scalar()
            if payload is None:
                return None
            answer = decode_answer(bytes(payload))
        except (SQLAlchemyError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("cached answer for %r unreadable: %s", key.text, exc)
            return None
        self._remember(key, answer)
        return answer

    def _remember(self, key: CacheKey, answer: Answer) -> None:
        with self._lock:
            self._memory[key.key] = answer
            self._memory.move_to_end(key.key)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)

    def contains(self, key: CacheKey) -> bool:
        t = schema.answer_cache
        with self.engine.connect() as conn:
            return bool(conn.execute(select(exists().where(t.c.cache_key == key.key))).scalar())

    def store(self, key: CacheKey, answer: Answer, render_ms: int | None = None) -> bool:
        """Keep `answer` under `key` if it round-trips exactly; True when stored."""
        if answer.is_error or answer.export is not None:
            return False
        try:
            payload = encode_answer(answer)
            if not same_answer(answer, decode_answer(payload)):
                raise NotCacheable("the stored form differs")
        except NotCacheable as exc:
            log.info("answer to %r is not cached: %s", key.text, exc)
            return False
        t = schema.answer_cache
        try:
            # (a refresh writing to SQLite holds the write lock for seconds: the answer is
            # served now and kept next time rather than held up until the refresh commits)
            with self.engine.begin() as conn, brief_lock_wait(conn):
                conn.execute(t.insert().values(
                    cache_key=key.key, command=key.text[:2000], version=key.version,
                    payload=payload, render_ms=render_ms,
                    created_at=dt.datetime.now().replace(microsecond=0)))
        except IntegrityError:
            pass  # another thread or bot instance stored the same answer first
        except SQLAlchemyError as exc:
            # (the store busy: a refresh writing to SQLite; kept the next time it is asked)
            busy = isinstance(exc, OperationalError) and "locked" in str(exc.orig)
            log.log(logging.INFO if busy else logging.WARNING, "could not cache the answer to %r: %s",
                    key.text, exc)
            return False
        self._remember(key, answer)
        return True

    def prune(self, version: str | None = None) -> int:
        """Delete entries of every other data version; how many."""
        t = schema.answer_cache
        with self.engine.begin() as conn:
            return conn.execute(delete(t).where(t.c.version != (version or self.version()))).rowcount or 0

    # --- answering -------------------------------------------------------------------------

    def cached(self, text: str) -> Answer | None:
        """The stored answer to `text`, or None (not cacheable, or not rendered yet)."""
        key = self.key_for(text)
        return None if key is None else self.lookup(key)

    def handle(self, text: str, requester: Requester | None = None) -> Answer:
        """The router's answer to `text`: from the cache when there, else computed and kept."""
        try:
            key = self.key_for(text)
        except Exception:  # noqa: BLE001 - the router reports the failure to the user
            log.exception("no cache key for %r", text)
            key = None
        if key is None:
            return self.router.handle(text, requester)
        hit = self.lookup(key)
        if hit is not None:
            return hit
        with self._flight(key.key):  # the same text asked at once is computed once
            hit = self.lookup(key)
            if hit is not None:
                return hit
            return self._compute(key, text, requester)

    def _compute(self, key: CacheKey, text: str, requester: Requester | None) -> Answer:
        with _render_slots:
            started = time.perf_counter()
            command = self.router.resolve(text)[1]
            answer = (self.processes.compute(command, text)
                      if self.processes is not None and command is not None else None)
            if answer is None:
                answer = self.router.handle(text, requester)
            render_ms = int((time.perf_counter() - started) * 1000)
        self.store(key, answer, render_ms)
        return answer

    def _flight(self, key: str) -> threading.Lock:
        with self._lock:
            lock = self._flights.get(key)
            if lock is None:
                if len(self._flights) > 1000:
                    self._flights = {k: v for k, v in self._flights.items() if v.locked()}
                lock = self._flights[key] = threading.Lock()
            return lock

    # --- warming -----------------------------------------------------------------------------

    def warm(self, texts: Iterable[str] | None = None, *, scope: str = "all",
             budget_s: float | None = None, stop: threading.Event | None = None,
             progress: Callable[[str, bool], None] | None = None) -> WarmReport:
        """Pre-render `texts` (default: `warm_texts(scope)`) that are not cached yet, after
        deleting older versions' entries. Stops after `budget_s` seconds, or when `stop`
        is set."""
        report = WarmReport()
        if not self.enabled:
            return report
        started = time.perf_counter()
        try:
            report.pruned = self.prune()
        except SQLAlchemyError as exc:
            log.warning("could not remove outdated answers: %s", exc)
        for text in (warm_texts(self.router, scope) if texts is None else texts):
            if (budget_s is not None and time.perf_counter() - started > budget_s) or (
                    stop is not None and stop.is_set()):
                report.stopped_early = True
                break
            key = self.key_for(text)
            if key is None:
                continue
            if self.contains(key):
                report.already += 1
                continue
            with self._flight(key.key):
                if self.contains(key):
                    report.already += 1
                    continue
                answer = self._compute(key, text, None)
            stored = self.lookup(key) is not None
            if stored:
                report.rendered += 1
            else:
                report.skipped.append(f"{text}: {answer.summary[:80] if answer.is_error else 'not storable'}")
            if progress is not None:
                progress(text, stored)
        report.seconds = time.perf_counter() - started
        return report


def _ensure_table(engine: Engine) -> bool:
    """Stores made before the table existed get it here; False if that is not possible."""
    try:
        schema.answer_cache.create(engine, checkfirst=True)
        return True
    except SQLAlchemyError as exc:
        log.warning("answers will not be cached (no answer_cache table): %s", exc)
        return False


def warm_texts(router: Router, scope: str = "all") -> list[str]:
    """What to pre-render: each cacheable command bare and its examples ("defaults"), then
    (for "all") every command that takes a place for each region and each state."""
    if scope not in WARM_SCOPES:
        raise ValueError(f"warm scope must be one of {', '.join(WARM_SCOPES)}")
    if scope == "none":
        return []
    from bot.commands import COMMANDS

    cacheable = [c for c in COMMANDS if c.cacheable and c.name in router.commands]
    texts = [f"/{c.name}" for c in cacheable]
    texts += [e for c in cacheable for e in c.examples if router.resolve(e)[1] is c]
    if scope == "all":
        states, regions = _known_places(router.engine)
        places = [r.lower() for r in sorted(regions)] + sorted(states)
        texts += [f"/{c.name} {shlex.quote(p)}" for c in cacheable if PLACE_USAGE in c.usage
                  for p in places]
    return list(dict.fromkeys(texts))


def warm_answers(engine: Engine, settings: Any, scope: str = "all",
                 budget_s: float | None = None) -> WarmReport:
    """Pre-render the answers for the store's current data (after a load or refresh)."""
    return AnswerCache(Router(engine, settings)).warm(scope=scope, budget_s=budget_s)


class Warmer:
    """Keeps a store's answers pre-rendered next to a running bot: warms at start and
    whenever the data version changes (a refresh by the scheduler, the CLI, another bot)."""

    def __init__(self, engine: Engine, settings: Any, *, scope: str = "all",
                 interval_s: float = 60.0, texts: list[str] | None = None,
                 processes: AnswerProcesses | None = None):
        self.cache = AnswerCache(Router(engine, settings))
        self.cache.processes = processes  # the bot's answer processes render, when it has them
        self.scope = scope
        self.texts = texts
        self.interval_s = interval_s
        self.warmed: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="answer-warmer", daemon=True)

    def start(self) -> Warmer:
        with _WARMERS_LOCK:
            _WARMERS.add(self)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        with _WARMERS_LOCK:
            _WARMERS.discard(self)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def poke(self) -> None:
        """Check for new data now instead of at the next interval."""
        self._wake.set()

    def check(self) -> WarmReport | None:
        """Warm if the data changed since the last warm-up; its report, else None."""
        version = self.cache.version()
        if version == self.warmed:
            return None
        report = self.cache.warm(self.texts, scope=self.scope, stop=self._stop)
        if not report.stopped_early:
            self.warmed = version
        log.info("%s", report.line())
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - answers are then rendered on demand
                log.exception("pre-rendering answers failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()


_WARMERS: set[Warmer] = set()
_WARMERS_LOCK = threading.Lock()


def poke_warmers() -> int:
    """Wake this process's running warmers (after a refresh); how many there are."""
    with _WARMERS_LOCK:
        warmers = list(_WARMERS)
    for w in warmers:
        w.poke()
    return len(warmers)
