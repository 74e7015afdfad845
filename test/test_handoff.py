"""The executor-to-worker hand-off: latest frame wins, offering never blocks, stop joins."""

import threading
import time

from vit_seg_node.core.handoff import LatestFrameWorker


def gated_worker(seen: list, rearm: bool = False):
    """Return a started worker whose handler records each item and waits for ``release``."""
    release, started = threading.Event(), threading.Event()

    def handle(item):
        seen.append(item)
        started.set()
        release.wait(5)
        if rearm:
            release.clear()
    return LatestFrameWorker(handle, 'test_worker').start(), release, started


def test_a_busy_worker_gets_only_the_latest_frame_and_offer_never_blocks():
    seen = []
    w, release, started = gated_worker(seen)
    assert w.offer(0) is False
    assert started.wait(5)                  # the worker is inside handle(0)
    t = time.perf_counter()
    replaced = [w.offer(i) for i in (1, 2, 3)]
    assert time.perf_counter() - t < 0.1    # the executor side never waits for the worker
    assert replaced == [False, True, True]  # 1 waited, 2 replaced it, 3 replaced 2
    release.set()
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    assert seen == [0, 3]
    assert not w.is_alive()


def test_stop_without_frames_ends_the_thread_promptly():
    w = LatestFrameWorker(lambda item: None).start()
    t = time.perf_counter()
    w.stop()
    assert time.perf_counter() - t < 1.0 and not w.is_alive()


def test_sources_are_served_round_robin_so_a_flooding_one_cannot_starve_another():
    seen = []
    w, release, started = gated_worker(seen, rearm=True)
    w.offer('a0', 'a')
    assert started.wait(5)                  # the worker holds a0
    w.offer('b0', 'b')                      # b waits once
    for i in range(1, 20):                  # a floods: only its latest waits
        w.offer(f'a{i}', 'a')
    w.offer('c0', 'c')
    for _ in range(3):
        release.set()
        time.sleep(0.1)
    release.set()
    deadline = time.monotonic() + 5
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    # after a: b, then c, then a's latest (not a again before the others)
    assert seen == ['a0', 'b0', 'c0', 'a19']


def test_drain_discards_waiting_items_and_waits_for_the_one_in_work():
    release, started = threading.Event(), threading.Event()
    done = []

    def handle(item):
        started.set()
        release.wait(5)
        done.append(item)

    w = LatestFrameWorker(handle).start()
    w.offer(1, 'a')
    assert started.wait(5)
    w.offer(2, 'a')
    w.offer(3, 'b')
    threading.Timer(0.2, release.set).start()
    t = time.perf_counter()
    assert w.drain() == 2                   # 2 and 3 discarded
    assert time.perf_counter() - t >= 0.15 and done == [1]   # returned once 1 was handled
    time.sleep(0.1)
    assert done == [1]
    w.stop()
