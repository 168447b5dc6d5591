"""Cacheable answers computed in processes of their own.

The Slack app acknowledges each request on a thread of its process. Answers computed on
other threads of that process are mostly Python: they take turns with each other and with
the acknowledging threads on one interpreter lock, so a burst of commands with nothing
pre-rendered used one core of two. A cacheable command's answer depends only on its text,
the data and the settings (`bot.router.Command.cacheable`), so it can be computed anywhere:
here by a few worker processes, each with its own router on the same store, at a lower
CPU priority than the Slack process. The Slack process acknowledges, looks answers up,
stores what the workers computed and posts it.

Workers are spawned (nothing of the parent's threads or connections is inherited), start
when the app starts, and get the settings without the Slack secrets. When they cannot be
used (an in-memory SQLite store, a command added to this process's router only, an answer
that does not pickle, a worker that died) the caller computes the answer on its own thread
as before; a dead pool is started again at the next answer, up to `MAX_RESTARTS` times.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from analytics.priority import lower_priority
from storage.engine import engine_url

if TYPE_CHECKING:  # this module is what a worker imports first: it stays light
    from bot.answers import Answer
    from bot.router import Command
    from bot.settings import Settings

log = logging.getLogger(__name__)

# Each worker holds its own router, engine and libraries: 260 MB started, 300-460 MB after
# every command at 1M orders.
DEFAULT_PROCESSES = max(1, min(2, os.cpu_count() or 1))
# Workers run below the Slack process (whose acknowledgements must leave within 100 ms),
# not below everything: SCHED_IDLE would stop answers while a refresh uses every core.
WORKER_NICENESS = 10
MAX_RESTARTS = 3  # pools found dead before the processes are given up (answers on threads)

_router: Any = None  # the worker's Router (set in each worker process by `_start_worker`)


def _start_worker(url: str, settings: Settings) -> None:
    """Worker initialiser: a router on the store at `url`, imports done before any answer."""
    global _router
    lower_priority(WORKER_NICENESS)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from bot.router import Router
    from storage.engine import make_engine

    _router = Router(make_engine(url), settings)


def _ready(hold: float = 0.0) -> int:
    time.sleep(hold)  # held, so that the next call goes to another worker
    return os.getpid()


def _answer(text: str) -> Answer:
    return _router.handle(text, None)


def store_url(engine: Engine) -> str | None:
    """The URL a worker process opens the same store with, or None (an in-memory SQLite store)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return engine_url(engine)


class AnswerProcesses:
    """A pool of `processes` worker processes computing cacheable answers on one store."""

    def __init__(self, engine: Engine, settings: Settings, processes: int = DEFAULT_PROCESSES):
        self.url = store_url(engine)
        self.settings = settings.without_secrets()
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._restarts = 0
        self.answered = 0  # answers the workers gave

    @property
    def usable(self) -> bool:
        return self.url is not None and self.processes > 0 and not self._closed

    def start(self) -> None:
        """Start the workers now, from a thread at their priority (`wait_ready` waits for them)."""
        if not self.usable:
            return

        def spawn() -> None:
            if sys.platform.startswith("linux"):
                lower_priority(WORKER_NICENESS)  # this thread only; the workers it spawns inherit it
            pool = self._get_pool()
            if pool is not None:
                for _ in range(self.processes):  # each call no idle worker takes starts one
                    pool.submit(_ready)

        spawner = threading.Thread(target=spawn, name="pulse-answer-spawn")
        spawner.start()
        spawner.join()

    def wait_ready(self, timeout: float = 60.0) -> set[int]:
        """Wait until every worker has started (or `timeout` ran out); their process ids."""
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while len(seen) < self.processes and time.monotonic() < deadline:
            pool = self._get_pool()
            if pool is None:
                break
            calls = [pool.submit(_ready, 0.2) for _ in range(self.processes)]
            try:
                seen.update(c.result(timeout=max(0.0, deadline - time.monotonic())) for c in calls)
            except Exception:  # noqa: BLE001 - a broken or slow pool: report what was seen
                break
        return seen

    def compute(self, command: Command, text: str) -> Answer | None:
        """The router's answer to `text`, a cacheable `command`'s, computed by a worker
        process; None when the processes cannot give it (the caller then computes it)."""
        from bot.commands import COMMANDS

        pool = self._get_pool()
        if pool is None or command not in COMMANDS:  # a command added to this router only
            return None
        try:
            answer = pool.submit(_answer, text).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
                    self._restarts += 1
                    self._closed = self._restarts > MAX_RESTARTS
            log.warning("an answer process stopped; %s", "answering on threads from now on"
                        if self._closed else "starting them again")
            pool.shutdown(wait=True, cancel_futures=True)  # its workers are gone: quick
        except Exception:  # noqa: BLE001 - e.g. an answer that does not pickle: computed here
            log.exception("an answer process could not answer %r; answering on this thread", text)
        else:
            with self._lock:
                self.answered += 1
            return answer
        return None

    def _get_pool(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._pool is None and self.usable:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker, initargs=(self.url, self.settings))
            return self._pool

    def shutdown(self) -> None:
        """Stop the workers: answers not started are cancelled, the running ones finish."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            # waited for even when the caller does not wait for its threads: a pool left to
            # stop on its own fails at interpreter exit (its wake-up pipe already closed)
            pool.shutdown(wait=True, cancel_futures=True)
