"""The pool: jobs wait in it together and are placed by priority, loaded models, shortest
queue and arrival; slots are freed when a waiter leaves; priming adapts to measured times."""

from __future__ import annotations

import asyncio

import pytest

from comfyfn.fleet import Pool, Want

A = frozenset({("checkpoints", "a.safetensors")})
B = frozenset({("checkpoints", "b.safetensors")})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_jobs_go_to_the_emptiest_healthy_server_and_wait_when_all_are_full():
    async def go():
        pool = Pool(["a", "b", "c"], prime=0)
        pool.mark_down("c")
        first, second = pool.request(Want(order=0)), pool.request(Want(order=1))
        third = pool.request(Want(order=2))
        assert (first.result(), second.result()) == ("a", "b")
        assert not third.done() and pool.free_slots() == 0
        pool.mark_up("c")  # a server coming back places the waiting job
        assert third.result() == "c"
        fourth = pool.request(Want(order=3))
        pool.release("b")
        assert fourth.result() == "b"

    run(go())


def test_a_job_waits_for_the_server_holding_its_models_rather_than_load_them_elsewhere():
    async def go():
        pool = Pool(["s1", "s2"], prime=0)
        on_a, on_b = pool.request(Want(A, order=0)), pool.request(Want(B, order=1))
        assert (on_a.result(), on_b.result()) == ("s1", "s2")
        next_b, next_a = pool.request(Want(B, order=2)), pool.request(Want(A, order=3))
        pool.release("s1")  # s1 (models A) frees first: the A job takes it, though B came first
        assert next_a.result() == "s1" and not next_b.done()
        pool.release("s2")
        assert next_b.result() == "s2"
        assert pool.states["s1"].tail == A and pool.states["s2"].tail == B

    run(go())


def test_one_model_set_on_fresh_servers_starts_on_every_server():
    async def go():
        urls = [f"s{i}" for i in range(64)]
        pool = Pool(urls, prime=2)
        placed = [pool.request(Want(A, order=i)) for i in range(64)]
        assert sorted(f.result() for f in placed) == sorted(urls)

    run(go())


def test_without_by_model_jobs_are_placed_in_arrival_order():
    async def go():
        pool = Pool(["s1", "s2"], prime=0, by_model=False)
        pool.request(Want(A, order=0)), pool.request(Want(B, order=1))
        next_b, next_a = pool.request(Want(B, order=2)), pool.request(Want(A, order=3))
        pool.release("s1")
        assert next_b.result() == "s1" and not next_a.done()

    run(go())


def test_priority_reorders_waiting_jobs_across_the_pool():
    async def go():
        pool = Pool(["s1"], prime=0)
        pool.request(Want(order=0))
        low, high = pool.request(Want(order=1)), pool.request(Want(priority=5, order=2))
        pool.release("s1")
        assert high.result() == "s1" and not low.done()

    run(go())


def test_withdrawing_gives_a_slot_back_and_a_cancelled_wait_takes_none():
    async def go():
        pool = Pool(["s1"], prime=0)
        held = pool.request(Want(order=0))
        waiting = pool.request(Want(order=1))
        pool.withdraw(held)  # placed, then given up: the slot goes to the next waiter
        assert waiting.result() == "s1" and pool.states["s1"].in_flight == 1
        later = asyncio.ensure_future(pool.acquire(Want(order=2)))
        await asyncio.sleep(0)
        later.cancel()
        with pytest.raises(asyncio.CancelledError):
            await later
        pool.release("s1")
        assert pool.states["s1"].in_flight == 0 and pool.free_slots() == 1

    run(go())


def test_a_reattached_job_counts_without_waiting_and_sets_the_tail():
    pool = Pool(["s1"], prime=0)
    pool.take("s1", Want(B))
    assert pool.states["s1"].in_flight == 1 and pool.states["s1"].tail == B
    assert pool.free_slots() == 0


def test_adaptive_priming_follows_the_measured_job_and_turnaround_times():
    pool = Pool(["s1"])  # prime=None: adaptive
    assert pool.slots("s1") == 3  # nothing measured yet: two queued behind the running one
    pool.states["s1"].in_flight = 20
    for _ in range(10):  # 20 ms jobs, 70 ms from a job's end to our next job in the queue
        pool.release("s1", busy=0.020, turnaround=0.070)
    assert pool.slots("s1") == 5  # ceil(70/20 + 1/2) = 4 queued, plus the running one
    for _ in range(20):  # long jobs: one queued job would cover the turnaround; two are kept
        pool.release("s1", busy=2.0, turnaround=0.070)
    assert pool.slots("s1") == 3
    assert Pool(["s1"], most=1).slots("s1") == 2  # the cap wins over the floor
    assert Pool(["s1"], prime=3).slots("s1") == 4


def test_the_adaptive_priming_is_computed_again_only_when_a_server_s_times_change(monkeypatch):
    import comfyfn.fleet.pool as pool_module
    from comfyfn.fleet import prime_for as real

    calls: list[str] = []

    def counted(*args, **kwargs):
        calls.append("x")
        return real(*args, **kwargs)

    monkeypatch.setattr(pool_module, "prime_for", counted)
    pool = Pool(["http://a", "http://b"])
    for _ in range(50):
        pool.open_slots()
    assert len(calls) == 2  # once per server
    pool.states["http://a"].in_flight += 1
    pool.release("http://a", busy=0.2, turnaround=0.05)
    pool.open_slots()
    assert len(calls) == 3  # only the server whose times changed
