import asyncio

import numpy as np
import pytest

from ebjr.serve.batcher import Batcher, Overloaded


def run(coro):
    return asyncio.run(coro)


def make(max_batch=8, max_wait_s=0.01, max_queue_rows=64, fail=False, delay=0.0, **kw):
    calls = []

    async def fn(blocks):
        calls.append([b.shape[0] for b in blocks])
        await asyncio.sleep(delay)
        if fail:
            raise RuntimeError("model broke")
        return [b.sum(axis=tuple(range(1, b.ndim))) * 2 for b in blocks]

    return Batcher("test", fn, max_batch=max_batch, max_wait_s=max_wait_s,
                   max_queue_rows=max_queue_rows, **kw), calls


def test_concurrent_blocks_coalesce_and_each_gets_its_own_rows():
    async def main():
        b, calls = make(max_batch=8, max_wait_s=0.05)
        b.start()
        xs = [np.full((2, 3), i, dtype=np.float32) for i in range(8)]
        results = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.close()
        return xs, results, calls

    xs, results, calls = run(main())
    for x, r in zip(xs, results, strict=True):
        np.testing.assert_array_equal(r, x.sum(axis=1) * 2)
    assert all(sum(c) <= 8 for c in calls)
    assert len(calls) == 2  # 16 rows, 8 per batch


def test_a_lone_block_waits_at_most_max_wait():
    async def main():
        b, calls = make(max_batch=100, max_wait_s=0.02)
        b.start()
        t0 = asyncio.get_running_loop().time()
        await b.submit(np.ones((1, 2)))
        waited = asyncio.get_running_loop().time() - t0
        await b.close()
        return waited, calls

    waited, calls = run(main())
    assert calls == [[1]] and waited < 1.0


def test_full_queue_refuses_with_retry_after_and_close_drains():
    async def main():
        b, _ = make(max_batch=4, max_wait_s=0.0, max_queue_rows=6, delay=0.05)
        b.start()
        first = [asyncio.ensure_future(b.submit(np.ones((3, 1)))) for _ in range(2)]
        await asyncio.sleep(0)  # both queued (6 rows)
        with pytest.raises(Overloaded) as info:
            await b.submit(np.ones((1, 1)))
        assert info.value.retry_after >= 1
        await b.close()
        with pytest.raises(Overloaded, match="shutting down"):
            await b.submit(np.ones((1, 1)))
        return [f.result() for f in first]

    done = run(main())
    assert len(done) == 2  # close() finished every queued block


def test_an_error_reaches_every_block_of_the_batch():
    async def main():
        b, _ = make(max_wait_s=0.05, fail=True)
        b.start()
        out = await asyncio.gather(*(b.submit(np.ones((1, 1))) for _ in range(3)),
                                   return_exceptions=True)
        await b.close()
        return out

    out = run(main())
    assert all(isinstance(o, RuntimeError) and "model broke" in str(o) for o in out)


def test_blocks_of_different_row_shapes_are_not_mixed():
    async def main():
        b, calls = make(max_batch=10, max_wait_s=0.05)
        b.start()
        shapes = [(1, 2), (1, 3), (1, 2), (1, 3)]
        out = await asyncio.gather(*(b.submit(np.ones(s)) for s in shapes))
        await b.close()
        return out, calls

    out, calls = run(main())
    assert [o.tolist() for o in out] == [[4.0], [6.0], [4.0], [6.0]]
    assert sorted(calls) == [[1, 1], [1, 1]]


def test_in_flight_limit_lets_batches_grow_while_busy():
    async def main():
        b, calls = make(max_batch=64, max_wait_s=0.0, delay=0.05, max_in_flight=1)
        b.start()
        await asyncio.gather(*(b.submit(np.ones((1, 1))) for _ in range(20)))
        await b.close()
        return calls

    calls = run(main())
    assert sum(map(sum, calls)) == 20 and len(calls) < 20


def _two_phase(fail: bool = False, in_flight: int = 8, gate: asyncio.Event | None = None,
               max_queue_rows: int = 64):
    """A batcher whose ``run`` (one at a time) is quick and whose ``finish`` waits for
    ``gate``, as the joint engine's student and teacher. It records, as each batch's run
    starts, its blocks' rows and how many batches had finished; and the most runs at once."""
    starts, finished, running = [], [], {"now": 0, "most": 0}

    async def run_part(blocks):
        starts.append(([b.shape[0] for b in blocks], len(finished)))
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(0.01)
        running["now"] -= 1
        return blocks

    async def finish(blocks):
        if gate is not None:
            await gate.wait()
        if fail:
            raise RuntimeError("teacher broke")
        finished.append(len(blocks))
        return [b.sum(axis=1) for b in blocks]

    b = Batcher("student", run_part, max_batch=4, max_wait_s=0.0,
                max_queue_rows=max_queue_rows, max_in_flight=in_flight, max_running=1,
                finish=finish)
    return b, starts, finished, running


async def _until(check, timeout_s: float = 5.0) -> None:
    async def poll():
        while not check():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout_s)


def test_finish_runs_off_the_slot_so_the_next_batch_starts_meanwhile():
    async def main():
        gate = asyncio.Event()
        b, starts, finished, running = _two_phase(gate=gate)
        b.start()
        xs = [np.full((1, 3), i, dtype=np.float32) for i in range(12)]
        pending = asyncio.gather(*(b.submit(x) for x in xs))
        await _until(lambda: len(starts) == 3)  # with run's slot held through finish: 1
        done_before = len(finished)
        gate.set()
        results = await pending
        await b.close()
        return xs, results, starts, finished, running["most"], done_before

    xs, results, starts, finished, most, done_before = run(main())
    for x, r in zip(xs, results, strict=True):  # the results are finish's, per block
        np.testing.assert_array_equal(r, x.sum(axis=1))
    assert [rows for rows, _ in starts] == [[1] * 4] * 3 and sum(finished) == 12
    assert done_before == 0 and [k for _, k in starts] == [0, 0, 0]
    assert most == 1  # one batch in run at a time


def test_a_failure_in_finish_reaches_every_block_and_frees_nothing_twice():
    async def main():
        b, _, _, _ = _two_phase(fail=True)
        b.start()
        out = await asyncio.gather(*(b.submit(np.ones((1, 2))) for _ in range(6)),
                                   return_exceptions=True)
        await b.close()
        return out, b._slots._value, b._running._value

    out, free, running = run(main())
    assert len(out) == 6 and all(isinstance(e, RuntimeError) for e in out)
    assert (free, running) == (8, 1)  # every slot released once per batch


def test_batches_waiting_in_finish_count_in_flight_so_a_full_queue_refuses():
    async def main():
        gate = asyncio.Event()
        b, starts, _, _ = _two_phase(in_flight=2, gate=gate, max_queue_rows=8)
        b.start()
        first = [asyncio.ensure_future(b.submit(np.ones((4, 2)))) for _ in range(2)]
        await _until(lambda: len(starts) == 2)  # both batches ran and wait in finish
        first += [asyncio.ensure_future(b.submit(np.ones((4, 2)))) for _ in range(2)]
        await _until(lambda: b.queued_rows == 8)  # no slot for a third batch: they queue
        await asyncio.sleep(0.05)  # (time for a third batch to start, were there a slot)
        with pytest.raises(Overloaded):  # (a third batch started: this one would wait)
            await asyncio.wait_for(b.submit(np.ones((1, 2))), 2.0)
        started = len(starts)
        gate.set()
        out = await asyncio.gather(*first)
        await b.close()
        return started, out

    started, out = run(main())
    assert started == 2 and len(out) == 4
