"""A fixed pool of inference threads behind a bounded queue.

Why not concurrent.futures.ThreadPoolExecutor: its queue is unbounded, so an
overload would pile up requests (and memory) instead of being refused. Here a
full queue raises QueueFull at once and the client gets a quick 503.
Inference runs in these few threads only, so the number of threads computing
at once stays workers x intra-op threads, whatever the number of connections.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable


class QueueFull(Exception):
    pass


class WorkerPool:
    def __init__(self, workers: int, queue_size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._threads = [threading.Thread(target=self._loop, name=f"infer-{i}", daemon=True)
                         for i in range(workers)]
        self._busy = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], object]) -> Future:
        future: Future = Future()
        try:
            self._queue.put_nowait((future, fn))
        except queue.Full:
            raise QueueFull() from None
        return future

    def depth(self) -> int:
        """Requests waiting for a worker (not counting the ones running)."""
        return self._queue.qsize()

    def busy(self) -> int:
        return self._busy

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._busy += 1
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._busy -= 1

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
