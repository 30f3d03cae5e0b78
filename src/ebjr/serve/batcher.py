"""Dynamic batching: concurrent requests coalesce into one model call.

A :class:`Batcher` owns a bounded queue of row blocks. Its loop takes a free
slot (at most ``max_in_flight`` batches started and not yet answered, and at
most ``max_running`` of them in ``run``), waits until ``max_batch`` rows are
queued or the oldest block has waited ``max_wait_s``, and hands the blocks, in
arrival order, to ``run``, which returns one result per block (or, with
``finish``, what ``finish`` turns into them once ``run``'s slot is free again:
a batch's later part, e.g. the teacher, then overlaps the next batch's
``run``). Blocks with a different row shape than the first wait for the next
batch. Every submitted block gets exactly one outcome: its result, ``run``'s
exception, or :class:`Overloaded` at submission.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebjr.exceptions import Overloaded

__all__ = ["BatchStats", "Batcher", "Overloaded"]


@dataclass
class BatchStats:
    """What a batcher did, in Triton's statistics terms (nanoseconds, summed).

    ``requests`` blocks ran; ``queue_ns`` is their summed wait from submission
    to the start of their batch; ``compute_ns`` sums, per block, the run time
    of the batch it was in; ``batches`` maps a batch's rows to ``[count, ns]``.
    """

    requests: int = 0
    executions: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    batches: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class _Block:
    x: np.ndarray
    future: asyncio.Future
    t: float = field(default_factory=time.perf_counter)


class Batcher:
    """Coalesce submitted row blocks into batches for ``run``.

    Args:
        name: for messages and metrics (``student``, ``teacher``).
        run: ``async run(blocks) -> results``, one result per block.
        max_batch: rows that start a batch at once (a larger single block
            still runs, alone).
        max_wait_s: longest the oldest block waits for company.
        max_queue_rows: rows that may wait; a block that would exceed it is
            refused with :class:`Overloaded`.
        max_in_flight: batches started and not yet answered (bounds the work
            a full queue stands behind: beyond it, blocks wait and, past
            ``max_queue_rows``, are refused).
        on_batch: called with the rows of each batch (metrics).
        finish: ``async finish(out) -> results``, called with what ``run``
            returned once ``run``'s slot is free: the part of a batch that
            waits on something else (the joint model's teacher), so that the
            next batch forms and starts meanwhile, from every row that queued
            while ``run`` ran.
        max_running: batches in ``run`` at once (default ``max_in_flight``;
            with ``finish``, e.g. 1 for a model on one thread).
    """

    def __init__(
        self,
        name: str,
        run: Callable[[list[np.ndarray]], Awaitable[list[Any]]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue_rows: int,
        max_in_flight: int = 1,
        on_batch: Callable[[int], None] | None = None,
        finish: Callable[[Any], Awaitable[list[Any]]] | None = None,
        max_running: int | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue_rows = max_queue_rows
        self._queue: collections.deque[_Block] = collections.deque()
        self._rows = 0
        self._slots = asyncio.Semaphore(max_in_flight)  # started, not yet answered
        self._running = asyncio.Semaphore(max_running or max_in_flight)  # in run
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._closing = False
        self._on_batch = on_batch
        self._finish = finish
        self._rows_per_s = 0.0  # smoothed service rate, for Retry-After
        self.stats = BatchStats()

    @property
    def queued_rows(self) -> int:
        return self._rows

    @property
    def busy(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    def retry_after(self) -> float:
        """Seconds until the current queue has probably drained (at least 1)."""
        if self._rows_per_s <= 0:
            return 1.0
        return max(1.0, self._rows / self._rows_per_s)

    def check_room(self) -> None:
        """Raise :class:`Overloaded` if the queue is already full (cheap admission control)."""
        if self._rows >= self.max_queue_rows:
            raise Overloaded(
                f"the {self.name} queue is full ({self._rows} rows waiting, limit "
                f"{self.max_queue_rows}); retry later",
                self.retry_after(),
            )

    async def submit(self, x: np.ndarray) -> Any:
        """Queue ``x`` (rows along axis 0) and wait for its result."""
        if self._closing:
            raise Overloaded(
                f"the {self.name} queue is closed: the server is shutting down", closing=True
            )
        n = int(x.shape[0])
        if self._rows + n > self.max_queue_rows:
            raise Overloaded(
                f"the {self.name} queue is full ({self._rows} rows waiting, limit "
                f"{self.max_queue_rows}); retry later",
                self.retry_after(),
            )
        block = _Block(x, asyncio.get_running_loop().create_future())
        self._queue.append(block)
        self._rows += n
        self._wake.set()
        return await block.future

    async def close(self) -> None:
        """Refuse new blocks, finish every queued one, and stop."""
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ internals
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            await self._running.acquire()
            while not self._queue:
                if self._closing:
                    self._running.release()
                    self._slots.release()
                    return
                self._wake.clear()
                await self._wake.wait()
            deadline = self._queue[0].t + self.max_wait_s
            while self._rows < self.max_batch and not self._closing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            blocks = self._take()
            task = loop.create_task(self._execute(blocks))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Block]:
        first = self._queue.popleft()
        blocks, rows, shape = [first], int(first.x.shape[0]), first.x.shape[1:]
        skipped: list[_Block] = []
        while self._queue and rows < self.max_batch:
            b = self._queue[0]
            if b.x.shape[1:] != shape:
                skipped.append(self._queue.popleft())
                continue
            if rows + b.x.shape[0] > self.max_batch:
                break
            blocks.append(self._queue.popleft())
            rows += int(b.x.shape[0])
        self._queue.extendleft(reversed(skipped))
        self._rows -= rows
        return blocks

    async def _execute(self, blocks: list[_Block]) -> None:
        rows = sum(int(b.x.shape[0]) for b in blocks)
        if self._on_batch is not None:
            self._on_batch(rows)
        start = time.perf_counter()
        running = True
        try:
            results = await self._run([b.x for b in blocks])
            self._running.release()
            running = False
            if self._finish is not None:
                results = await self._finish(results)
        except BaseException as exc:  # every block gets an outcome, whatever happened
            for b in blocks:
                if not b.future.done():
                    b.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for b, r in zip(blocks, results, strict=True):
                if not b.future.done():
                    b.future.set_result(r)
        finally:
            if running:
                self._running.release()
            self._slots.release()
            end = time.perf_counter()
            self._count(blocks, rows, start, end)
            elapsed = max(end - start, 1e-6)
            rate = rows / elapsed
            self._rows_per_s = (
                rate if self._rows_per_s == 0 else 0.8 * self._rows_per_s + 0.2 * rate
            )

    def _count(self, blocks: list[_Block], rows: int, start: float, end: float) -> None:
        st, ns = self.stats, int(1e9 * (end - start))
        st.executions += 1
        st.requests += len(blocks)
        st.queue_ns += sum(int(1e9 * (start - b.t)) for b in blocks)
        st.compute_ns += ns * len(blocks)
        entry = st.batches.setdefault(rows, [0, 0])
        entry[0] += 1
        entry[1] += ns
