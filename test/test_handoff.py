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


def gated_batch_worker(seen: list, batch: int):
    """Return a started worker of ``batch`` whose handler records each list and waits."""
    release, started = threading.Event(), threading.Event()

    def handle(items):
        seen.append(list(items))
        started.set()
        release.wait(5)
        release.clear()
    return LatestFrameWorker(handle, 'test_batch_worker', batch).start(), release, started


def wait_len(seen: list, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_batch_worker_takes_the_latest_item_of_up_to_n_sources_at_once():
    seen = []
    w, release, started = gated_batch_worker(seen, 2)
    w.offer('a0', 'a')
    assert started.wait(5)                  # alone: taken at once, a list of one
    for i in range(1, 5):
        w.offer(f'a{i}', 'a')               # a's latest replaces the one waiting
    w.offer('b0', 'b')
    release.set()
    wait_len(seen, 2)
    release.set()
    w.stop()
    assert seen == [['a0'], ['b0', 'a4']]   # b first (a was served last), then a's latest


def test_a_batch_worker_is_fair_round_robin_over_more_sources_than_its_batch():
    seen = []
    w, release, started = gated_batch_worker(seen, 2)
    w.offer('a0', 'a')
    assert started.wait(5)
    for s in 'bcd':
        w.offer(f'{s}0', s)
    w.offer('a1', 'a')
    release.set()                           # takes b, c (after a)
    wait_len(seen, 2)
    for s in 'bc':                          # b and c offer again while d and a wait
        w.offer(f'{s}1', s)
    release.set()                           # takes d, a (after c), not b or c again
    wait_len(seen, 3)
    release.set()
    wait_len(seen, 4)
    release.set()
    w.stop()
    assert seen == [['a0'], ['b0', 'c0'], ['d0', 'a1'], ['b1', 'c1']]


def test_a_batch_of_one_hands_over_items_not_lists():
    seen = []
    w = LatestFrameWorker(seen.append, 'one', batch=1).start()
    w.offer('x', 'a')
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    assert seen == ['x']
