"""The executor-to-worker hand-off: latest frame wins, offering never blocks, stop joins."""

import threading
import time

from vit_seg_node.core.handoff import LatestFrameWorker


def test_a_busy_worker_gets_only_the_latest_frame_and_offer_never_blocks():
    release, started = threading.Event(), threading.Event()
    seen = []

    def handle(item):
        seen.append(item)
        started.set()
        release.wait(5)

    w = LatestFrameWorker(handle, 'test_worker').start()
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
