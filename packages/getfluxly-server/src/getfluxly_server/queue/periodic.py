"""Background work that is not a job: one pass at start, then one every ``interval`` seconds,
on a daemon thread of its own (a feature's ``Runner``, started and stopped with the worker)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("getfluxly.worker")


class Periodic:
    """Runs :meth:`run_once` at :meth:`start` and every :attr:`interval` seconds after, until
    :meth:`stop`. A pass that raises is logged and the next one runs on time: a broken
    database must not kill the thread. Subclasses set :attr:`name` (the thread's, and the
    log's words) and write :meth:`run_once`, which tests also call directly."""

    name = "periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        """One pass, in the caller's thread."""
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to end and wait up to ``timeout`` seconds for a pass in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: a long pass may end early."""
        return self._stop.is_set()

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                log.exception("%s: the pass failed; the next one runs in %g s", self.name,
                              self.interval)  # fmt: skip
            if self._stop.wait(self.interval):
                return
