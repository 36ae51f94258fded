"""A fixed pool of inference threads behind a bounded queue.

Why not concurrent.futures.ThreadPoolExecutor: its queue is unbounded, so an
overload would pile up requests (and memory) instead of being refused. Here a
full queue raises QueueFull at once and the client gets a quick 503.
Inference runs in these few threads only, so the number of threads computing
at once stays workers x intra-op threads, whatever the number of connections.

A job whose request was answered without it (deadline, client gone, drain) is
cancelled: if it still waits in the queue, a worker drops it unrun. A forward
pass that has begun cannot be interrupted (torch has no such hook): it runs to
its end and its worker is busy until then; `orphans()` counts those, so that
admission does not hand their slot out twice, and `stuck()` names the models
whose forward has run longer than the request deadline (readiness).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, Optional, Set


class QueueFull(Exception):
    pass


class Dropped(Exception):
    """The job's client left before a worker reached it: dropped, not computed."""


class Job:
    """One queued forward pass; `future` carries its result."""
    __slots__ = ("future", "fn", "model", "wanted", "started", "abandoned")

    def __init__(self, fn, model, wanted):
        self.future: Future = Future()
        self.fn = fn
        self.model = model
        self.wanted = wanted
        self.started: Optional[float] = None
        self.abandoned = False

    def abandon(self) -> None:
        """Its request was answered without it: drop it if queued; if running, its
        result is thrown away when the forward pass ends."""
        self.abandoned = True
        self.future.cancel()


class WorkerPool:
    def __init__(self, workers: int, queue_size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._threads = [threading.Thread(target=self._loop, name=f"infer-{i}", daemon=True)
                         for i in range(workers)]
        self._busy = 0
        self._lock = threading.Lock()
        self._running: Dict[int, Job] = {}
        self.dropped = 0
        # Called (from the worker thread) when a forward pass of an abandoned job ends.
        self.on_orphan_done: Optional[Callable[[], None]] = None

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], object], model: Optional[str] = None,
               wanted: Callable[[], bool] = lambda: True) -> Job:
        """Queue `fn`; `wanted()` is asked just before it would run: False drops it."""
        job = Job(fn, model, wanted)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull() from None
        return job

    def depth(self) -> int:
        """Requests waiting for a worker (not counting the ones running)."""
        return self._queue.qsize()

    def busy(self) -> int:
        return self._busy

    def orphans(self) -> int:
        """Forward passes still running for a request already answered (or gone)."""
        with self._lock:
            return sum(1 for job in self._running.values() if job.abandoned)

    def stuck(self, older_than: float) -> Set[str]:
        """Models with a forward pass running for more than `older_than` seconds."""
        now = time.monotonic()
        with self._lock:
            return {job.model or "" for job in self._running.values()
                    if now - job.started > older_than}

    def _loop(self) -> None:
        ident = threading.get_ident()
        while True:
            job = self._queue.get()
            if job is None:
                return
            future = job.future
            if job.abandoned or future.cancelled():
                continue
            if not job.wanted():
                self.dropped += 1
                future.set_exception(Dropped())
                continue
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._busy += 1
                job.started = time.monotonic()
                self._running[ident] = job
            try:
                future.set_result(job.fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._running.pop(ident, None)
                if job.abandoned and self.on_orphan_done is not None:
                    self.on_orphan_done()

    def stop(self, timeout: float = 5.0) -> None:
        """Let the workers finish what they hold, then end them (a no-op when
        never started, e.g. SIGTERM while models were still loading)."""
        if not any(t.is_alive() for t in self._threads):
            return
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(timeout)
