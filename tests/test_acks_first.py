"""Answer work waits (briefly) while Slack requests are being acknowledged (bot.replies.AcksFirst)."""

from __future__ import annotations

import threading
import time

from bot.replies import AcksFirst


def test_nothing_in_flight_means_no_wait() -> None:
    gate = AcksFirst(max_wait=5.0)
    started = time.perf_counter()
    gate.wait()
    assert time.perf_counter() - started < 0.05


def test_work_waits_for_the_requests_in_flight_and_no_longer() -> None:
    gate = AcksFirst(max_wait=5.0)
    ended: list[float] = []

    def request(seconds: float) -> None:
        with gate.request():
            time.sleep(seconds)
        ended.append(time.perf_counter())

    threads = [threading.Thread(target=request, args=(s,)) for s in (0.2, 0.4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert gate.in_flight == 2
    gate.wait()
    waited_until = time.perf_counter()
    for t in threads:
        t.join()
    assert len(ended) == 2 and waited_until >= max(ended) - 0.01  # after the last one ended
    assert waited_until - max(ended) < 0.2  # and not much later
    assert gate.in_flight == 0 and gate.handled == 2


def test_the_wait_is_bounded() -> None:
    gate = AcksFirst(max_wait=0.1)
    release = threading.Event()

    def request() -> None:
        with gate.request():
            release.wait(5)

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.05)
    started = time.perf_counter()
    gate.wait()
    waited = time.perf_counter() - started
    release.set()
    t.join()
    assert 0.08 <= waited < 1.0
    assert AcksFirst(max_wait=0).max_wait == 0  # 0: never waits
