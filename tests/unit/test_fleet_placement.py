"""The fleet's placement policy (pure) and what it reads of a workflow: model sets, prompt
keys (:mod:`comfyfn.models`), :func:`assign` and :func:`prime_for` (:mod:`comfyfn.fleet`) —
rules one by one, invariants on random pools, and a simulated pool."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from comfyfn.fleet import ServerView, Waiting, assign, prime_for
from comfyfn.models import model_set, prompt_key
from comfyfn.workflow import zimage, zimage_turbo

A = frozenset({("diffusion_models", "a.safetensors"), ("vae", "ae.safetensors")})
B = frozenset({("diffusion_models", "b.safetensors"), ("vae", "ae.safetensors")})
C = frozenset({("checkpoints", "c.safetensors")})
NONE: frozenset[tuple[str, str]] = frozenset()


def job(key: Hashable, models=A, *, prompt=None, priority=0, order=None) -> Waiting:
    return Waiting(key, models, prompt, priority, order if order is not None else hash(key) % 97)


def server(url, *, free=2, jobs=0, tail=None, prompt=None, healthy=True) -> ServerView:
    return ServerView(url, free, jobs, tail, prompt, healthy)


def keys(servers, waiting) -> list[tuple[Hashable, str]]:
    """:func:`assign`'s placements as (job key, url)."""
    return [(job.key, url) for job, url in assign(servers, waiting)]


# -- model sets and prompts ---------------------------------------------------------------------


def test_the_model_set_is_the_loader_inputs_of_the_bound_graph():
    turbo = model_set(zimage_turbo())
    assert turbo == {
        ("diffusion_models", "z_image_turbo_bf16.safetensors"),
        ("text_encoders", "qwen_3_4b.safetensors"),
        ("vae", "ae.safetensors"),
    }
    assert model_set(zimage()) - turbo == {("diffusion_models", "z_image_bf16.safetensors")}
    bound = zimage_turbo().bind(model="other.safetensors")
    assert ("diffusion_models", "other.safetensors") in model_set(bound)
    assert model_set(zimage_turbo().bind(prompt="x", seed=3, steps=2)) == turbo


def test_the_prompt_key_ignores_seed_and_size_but_not_the_texts():
    wf = zimage()
    one = prompt_key(wf.bind(prompt="a cat", seed=1, width=512))
    assert one == prompt_key(wf.bind(prompt="a cat", seed=2, width=768))
    assert one != prompt_key(wf.bind(prompt="a dog", seed=1))
    assert one != prompt_key(wf.bind(prompt="a cat", negative="blurry"))


# -- assign, rule by rule ------------------------------------------------------------------------


def test_interleaved_model_sets_split_across_fresh_servers():
    waiting = [job(i, A if i % 2 == 0 else B, order=i) for i in range(6)]
    placed = dict(keys([server("s1"), server("s2")], waiting))
    assert placed == {0: "s1", 2: "s1", 1: "s2", 3: "s2"}  # 4 and 5 wait


def test_a_job_waits_for_the_full_server_with_its_models():
    servers = [server("s1", free=0, jobs=2, tail=A), server("s2", free=1, jobs=1, tail=B)]
    assert keys(servers, [job("a", A, order=0), job("b", B, order=1)]) == [("b", "s2")]
    assert keys(servers, [job("a", A)]) == []  # s2 is busy: a waits for s1


def test_a_server_that_would_idle_takes_a_backlog_whose_models_are_elsewhere():
    servers = [server("s1", free=0, jobs=2, tail=A), server("s2", free=2, jobs=0, tail=B)]
    backlog = [job(f"a{i}", A, order=i) for i in range(3)]  # more than s1's 2 slots
    assert keys(servers, backlog) == [("a0", "s2"), ("a1", "s2")]  # s2 holds A now


def test_a_short_backlog_waits_for_its_server_rather_than_cost_a_load():
    servers = [server("s1", free=0, jobs=2, tail=A), server("s2", free=2, jobs=0, tail=B)]
    assert keys(servers, [job("a0", A, order=0), job("a1", A, order=1)]) == []


def test_a_server_that_has_loaded_nothing_takes_a_set_another_server_holds():
    servers = [server("s1", free=0, jobs=2, tail=A), server("s2", free=2, jobs=0)]
    short = [job("a0", A, order=0), job("a1", A, order=1)]  # s1 would clear them in a round
    assert keys(servers, short) == [("a0", "s2"), ("a1", "s2")]  # no load is taken from s1
    fresh = [server("s1", free=2, jobs=1, tail=A), server("s2"), server("s3")]
    assert keys(fresh, short) == [("a0", "s2"), ("a1", "s3")]  # idle servers start at once


def test_a_server_that_has_loaded_nothing_prefers_a_set_no_server_holds():
    servers = [server("s1", free=0, jobs=2, tail=A), server("s2", free=1, jobs=0)]
    assert keys(servers, [job("a", A, order=0), job("c", C, order=1)]) == [("c", "s2")]


def test_an_idle_server_prefers_its_own_models_to_taking_others():
    servers = [server("s1", free=0, jobs=2, tail=A), server("s2", free=1, jobs=0, tail=B)]
    waiting = [job(f"a{i}", A, order=i) for i in range(5)] + [job("b", B, order=9)]
    assert keys(servers, waiting) == [("b", "s2")]


def test_a_job_is_never_taken_from_a_free_server_with_its_models():
    servers = [server("s1", free=1, jobs=1, tail=A), server("s2", free=2, jobs=0, tail=B)]
    assert keys(servers, [job("a", A)]) == [("a", "s1")]


def test_a_model_set_no_server_has_goes_to_the_emptiest_server():
    servers = [server("s1", free=1, jobs=1, tail=A), server("s2", free=2, jobs=0, tail=B)]
    assert keys(servers, [job("c", C)]) == [("c", "s2")]


def test_variations_of_a_prompt_go_to_the_same_server_in_a_row():
    servers = [server("s1", free=1, jobs=1, tail=A, prompt="cat"), server("s2", free=0, jobs=2)]
    waiting = [job("dog", A, prompt="dog", order=0), job("cat", A, prompt="cat", order=1)]
    assert keys(servers, waiting) == [("cat", "s1")]
    both = [server("s1", free=2, tail=A), server("s2", free=0, jobs=2, tail=A)]
    rows = [
        job(f"{p}{i}", A, prompt=p, order=n)
        for n, (p, i) in enumerate(itertools.product(["cat", "dog"], range(2)))
    ]
    assert keys(both, [rows[0], rows[2], rows[1], rows[3]]) == [("cat0", "s1"), ("cat1", "s1")]


def test_priority_reorders_waiting_jobs_across_the_pool():
    servers = [server("s1", free=1, jobs=1, tail=A)]
    waiting = [job("old", A, order=0), job("urgent", C, priority=5, order=9)]
    assert keys(servers, waiting) == [("urgent", "s1")]  # even at the cost of a load
    both = [server("s1", free=0, jobs=2, tail=A), server("s2", free=1, jobs=1, tail=B)]
    waiting = [job("urgent-a", A, priority=5, order=1), job("b", B, order=0)]
    assert keys(both, waiting) == [("b", "s2")]  # urgent-a waits for s1, first in line


def test_jobs_without_model_files_fill_any_slot_and_keep_the_tail():
    servers = [server("s1", free=2, jobs=0, tail=A, prompt="p")]
    assert keys(servers, [job("x", NONE, order=0), job("a", A, prompt="p", order=1)]) == [
        ("a", "s1"),  # same models and prompt rank before a job without models
        ("x", "s1"),
    ]


def test_a_server_that_is_down_takes_nothing_and_holds_nothing_back():
    servers = [server("s1", free=2, tail=A, healthy=False), server("s2", free=1, jobs=1, tail=B)]
    assert keys(servers, [job("a", A)]) == [("a", "s2")]  # no server that is up has A
    assert keys(servers, [job("x", NONE)]) == [("x", "s2")]


def test_nothing_to_do():
    assert keys([server("s1")], []) == []
    assert keys([server("s1", free=0, jobs=2)], [job("a")]) == []
    assert keys([], [job("a")]) == []


# -- invariants on random pools ------------------------------------------------------------------

SETS = [A, B, C, NONE]
servers_st = st.lists(
    st.builds(
        lambda i, free, jobs, tail, healthy: server(
            f"s{i}", free=free, jobs=jobs, tail=tail, healthy=healthy
        ),
        st.integers(0, 99),
        st.integers(0, 3),
        st.integers(0, 3),
        st.sampled_from([None, A, B, C]),
        st.booleans(),
    ),
    max_size=4,
    unique_by=lambda s: s.url,
)
waiting_st = st.lists(
    st.builds(
        lambda models, prompt, priority, order: (models, prompt, priority, order),
        st.sampled_from(SETS),
        st.sampled_from([None, "p", "q"]),
        st.integers(0, 2),
        st.integers(0, 50),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(servers_st, waiting_st)
def test_assign_invariants(servers, raw):
    waiting = [Waiting(i, m, p, pr, o) for i, (m, p, pr, o) in enumerate(raw)]
    placed = keys(servers, waiting)
    placed_keys = [k for k, _ in placed]
    assert len(placed_keys) == len(set(placed_keys))
    assert set(placed_keys) <= {j.key for j in waiting}
    by_url = {s.url: s for s in servers}
    for url in {u for _, u in placed}:
        assert by_url[url].healthy
        assert sum(u == url for _, u in placed) <= by_url[url].free
    # after: replay the placements, then nothing that could run is left waiting
    after = {s.url: s for s in servers if s.healthy}
    models: dict[Hashable, Waiting[int]] = {j.key: j for j in waiting}
    for key, url in placed:
        s, j = after[url], models[key]
        after[url] = ServerView(
            url, s.free - 1, s.jobs + 1, j.models or s.tail, j.prompt if j.models else s.tail_prompt
        )
    free = [s for s in after.values() if s.free > 0]
    left = [j for j in waiting if j.key not in placed_keys]
    for j in left:
        assert not any(s.tail == j.models for s in free if j.models), "its server is free"
        assert j.models or not free, "a job without models waits beside a free slot"
        holders = [s for s in after.values() if j.models and s.tail == j.models]
        if any(s.jobs == 0 for s in free):  # a server idles while j waits: only for a
            backlog = sum(o.models == j.models for o in left)  # backlog its holders clear
            assert holders and backlog <= sum(s.free + s.jobs for s in holders), "idles"


# -- a simulated pool: loads and throughput -------------------------------------------------------


def simulate(
    policy: Callable[[list[ServerView], list[Waiting[int]]], list[tuple[Waiting[int], str]]],
    jobs: list[frozenset[tuple[str, str]]],
    *,
    servers: int = 2,
    slots: int = 2,
    job_s: float = 0.2,
    load_s: float = 1.0,
) -> tuple[float, dict[str, int]]:
    """Run ``jobs`` on a simulated pool; (seconds, loads per server). A server runs its queue
    in order; a job takes ``job_s`` ± 50% (seeded), plus ``load_s`` if its models differ
    from those the server ran last."""
    durations = [job_s * random.Random(i).uniform(0.5, 1.5) for i in range(len(jobs))]
    urls = [f"s{i}" for i in range(servers)]
    queue: dict[str, list[int]] = {u: [] for u in urls}
    tail: dict[str, frozenset[tuple[str, str]] | None] = dict.fromkeys(urls)
    loaded: dict[str, frozenset[tuple[str, str]] | None] = dict.fromkeys(urls)
    loads = dict.fromkeys(urls, 0)
    waiting = [Waiting(i, m, None, 0, i) for i, m in enumerate(jobs)]
    events: list[tuple[float, str]] = []
    now, done = 0.0, 0
    while done < len(jobs):
        views = [ServerView(u, slots - len(queue[u]), len(queue[u]), tail[u]) for u in urls]
        for placed, url in policy(views, waiting):
            waiting = [w for w in waiting if w.key != placed.key]
            queue[url].append(placed.key)
            tail[url] = jobs[placed.key]
            if len(queue[url]) == 1:
                heapq.heappush(
                    events, (now + _run(url, jobs, queue, loaded, loads, durations, load_s), url)
                )
        now, url = heapq.heappop(events)
        queue[url].pop(0)
        done += 1
        if queue[url]:
            heapq.heappush(
                events, (now + _run(url, jobs, queue, loaded, loads, durations, load_s), url)
            )
    return now, loads


def _run(url, jobs, queue, loaded, loads, durations, load_s) -> float:
    index = queue[url][0]
    if loaded[url] != jobs[index]:
        loaded[url], loads[url] = jobs[index], loads[url] + 1
        return durations[index] + load_s
    return durations[index]


def shortest_queue(
    views: list[ServerView], waiting: list[Waiting[int]]
) -> list[tuple[Waiting[int], str]]:
    """The fleet's policy today: each job in order to the free server with the fewest jobs."""
    placed, free = [], {v.url: v.free for v in views}
    jobs = {v.url: v.jobs for v in views}
    for w in sorted(waiting, key=lambda w: w.order):
        open_ = [u for u in free if free[u] > 0]
        if not open_:
            break
        url = min(open_, key=lambda u: (jobs[u], u))
        free[url], jobs[url] = free[url] - 1, jobs[url] + 1
        placed.append((w, url))
    return placed


def test_simulated_interleaved_mix_loads_each_model_set_once_per_server():
    mix = [A if i % 2 == 0 else B for i in range(40)]
    seconds_sq, loads_sq = simulate(shortest_queue, mix)
    seconds_aff, loads_aff = simulate(assign, mix)
    assert all(n <= 2 for n in loads_aff.values())  # ≤ distinct model sets per server
    assert sum(loads_sq.values()) >= 10  # shortest queue reloads again and again
    assert seconds_sq / seconds_aff >= 1.5


def test_simulated_mix_with_a_long_tail_of_one_model_set_uses_both_servers():
    mix = [A if i % 2 == 0 else B for i in range(10)] + [A] * 30
    seconds, loads = simulate(assign, mix)
    assert all(n <= 2 for n in loads.values())
    single = sum(0.2 for _ in mix) + 1.0  # one server doing it all, one load
    assert seconds < 0.7 * single  # the B server switched to A instead of idling


# -- adaptive priming ------------------------------------------------------------------------------


def test_prime_follows_the_measured_job_time():
    assert prime_for([], []) == 2  # nothing measured yet: two, so short jobs never wait
    assert prime_for([0.2], []) == 2 and prime_for([0.2], [], least=3) == 3
    assert prime_for([0.020] * 10, [0.035] * 10) == 3  # short jobs: 1.75 + 0.5 → 3 queued
    assert prime_for([0.010] * 10, [0.035] * 10) == 4  # shorter still: 3.5 + 0.5 → 4
    assert prime_for([0.0] * 5, [0.03] * 5) == 8  # zero-length jobs: the cap
    assert prime_for([0.001] * 5, [0.03] * 5, most=4) == 4
    assert prime_for([5.0], [0.1], least=1) == 1  # a caller may allow one


def test_prime_never_drops_below_two_on_long_jobs():
    # one queued job leaves the GPU idle whenever a turnaround outlasts a job; two cost
    # nothing at long jobs (measured: 200 ms jobs, 0.76 of the limit with one, 0.79 with two)
    assert prime_for([0.200] * 10, [0.035] * 10) == 2
    assert prime_for([8.0] * 10, [0.2] * 10) == 2  # a real GPU job: two behind the running one
    assert prime_for([0.200] * 10, [0.25] * 10) == 2  # 1.25 + 0.5: the rule's own two


def test_prime_cap_wins_over_the_floor():
    assert prime_for([], [], most=1) == 1  # nothing measured yet
    assert prime_for([8.0] * 10, [0.2] * 10, most=1) == 1
    assert prime_for([0.0] * 5, [0.03] * 5, most=1) == 1


def test_prime_uses_the_slow_turnarounds_but_not_one_outlier():
    typical = [0.020] * 10
    assert prime_for(typical, [0.015] * 9 + [1.0]) == 2  # one outlier in ten: p90 ignores it
    assert prime_for(typical, [0.015] * 8 + [0.05, 0.05]) == 3  # two slow ones in ten count
