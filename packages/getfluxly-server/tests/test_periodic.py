"""queue.periodic.Periodic: a pass at start, then one per interval; a failing pass is logged
and the thread goes on; stop() ends it."""

from __future__ import annotations

import logging
import threading

import pytest

from getfluxly_server.queue.periodic import Periodic


class Counting(Periodic):
    name = "counting"

    def __init__(self, interval: float, fail_first: int = 0) -> None:
        super().__init__(interval)
        self.passes = 0
        self.fail_first = fail_first
        self.third = threading.Event()

    def run_once(self) -> None:
        self.passes += 1
        if self.passes >= 3:
            self.third.set()
        if self.passes <= self.fail_first:
            raise RuntimeError(f"pass {self.passes} broke")


def test_the_first_pass_runs_at_start_and_no_other_before_the_interval() -> None:
    runner = Counting(interval=3600)
    runner.start()
    # The thread makes its first pass even when stop() comes at once, and none after it.
    runner.stop()
    assert runner.passes == 1
    assert runner.stopping


def test_a_failing_pass_is_logged_and_the_next_ones_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Counting(interval=0.001, fail_first=2)
    with caplog.at_level(logging.ERROR, logger="getfluxly.worker"):
        runner.start()
        try:
            assert runner.third.wait(30), "the third pass never ran"
        finally:
            runner.stop()
    failures = [r for r in caplog.records if r.exc_info]
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["pass 1 broke", "pass 2 broke"]
    assert all("counting: the pass failed" in r.getMessage() for r in failures)


def test_stop_ends_the_thread() -> None:
    runner = Counting(interval=0.001)
    runner.start()
    assert runner.third.wait(30)
    thread = runner._thread
    runner.stop()
    assert thread is not None
    assert not thread.is_alive()
    assert runner._thread is None
