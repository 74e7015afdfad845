"""Child processes end with the process that started them: SIGTERM, and SIGKILL too.

The busy processes of ``regimes`` / ``tune`` / ``replay --cpu-load`` and the nodes that
``replay``, ``demo`` and ``bench-node`` start (``core.lifetime``). Each test is bounded in time
and kills whatever survives it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import ros_domain
from vit_seg_node.eval.harness import Probe, wait_for

DOMAIN = ros_domain(43)
VIT_SEG = [sys.executable, '-m', 'vit_seg_node.cli']

PARENT = '''
import sys, time
from vit_seg_node.core.cpuload import CpuLoad
from vit_seg_node.eval.harness import NodeProcess
load = CpuLoad(1)
load.start()
node = NodeProcess(int(sys.argv[1]), {'model_path': sys.argv[2], 'threads': 1})
print(load.procs[0].pid, node.proc.pid, flush=True)
time.sleep(300)
'''


def end_all(procs: list) -> list:
    """Wait up to 20 s for ``procs`` to end; kill and return those still alive."""
    _, alive = psutil.wait_procs(procs, timeout=20)
    for p in alive:
        p.kill()
    return alive


@pytest.mark.parametrize('when', ['at once', 'node ready'])
def test_sigkill_of_the_parent_ends_its_load_and_its_node(when, tiny_model):
    parent = subprocess.Popen([sys.executable, '-c', PARENT, str(DOMAIN), str(tiny_model)],
                              stdout=subprocess.PIPE, text=True)
    children: list = []
    probe = Probe(DOMAIN, 'lifetime_probe') if when == 'node ready' else None
    try:
        children = [psutil.Process(int(p)) for p in parent.stdout.readline().split()]
        assert len(children) == 2
        if probe is not None:
            assert wait_for(lambda: probe.diagnostics, 60), 'the node never started'
        parent.kill()
        parent.wait(10)
        alive = end_all(children)
        assert not alive, f'{alive} outlived their parent'
    finally:
        if probe is not None:
            probe.close()
        parent.kill()
        end_all([c for c in children if c.is_running()])


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_regimes_under_load_killed_leaves_no_busy_process(sig, tiny_model, tmp_path):
    out = tmp_path / 'r.json'
    proc = subprocess.Popen(VIT_SEG + ['regimes', '--model', str(tiny_model), '--json', str(out),
                                       '--regimes', 'loaded', '--runs', '1000000'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    busy: list = []
    try:
        assert wait_for(lambda: me.children(), 60, 0.1), 'no load started'
        busy = me.children()
        time.sleep(1)
        proc.send_signal(sig)
        rc = proc.wait(30)
        alive = end_all(busy)
        assert not alive, 'the busy process outlived regimes'
        assert not out.exists() and not out.with_suffix('.md').exists()
        if sig == signal.SIGTERM:
            assert rc == 130 and 'Traceback' not in proc.stderr.read()
    finally:
        proc.kill()
        end_all([b for b in busy if b.is_running()])


def test_a_signal_inside_uninterrupted_comes_at_its_end():
    from vit_seg_node.core.lifetime import terminate_on_sigterm, uninterrupted

    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    done = []
    try:
        terminate_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                signal.raise_signal(signal.SIGTERM)
                time.sleep(0.05)
                done.append('made')         # not cut in half
                with uninterrupted():       # nested: still held
                    signal.raise_signal(signal.SIGINT)
                    done.append('nested')
                done.append('after nested')
        assert done == ['made', 'nested', 'after nested']
        with pytest.raises(KeyboardInterrupt):   # outside: at once
            signal.raise_signal(signal.SIGTERM)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])


@pytest.mark.parametrize('delay', [0.0, 6.0])
def test_sigterm_to_bench_node_exits_clean(delay, tiny_model, camvid_mini):
    """SIGTERM while its node starts (0 s after it appears) and while it times (6 s after)."""
    proc = subprocess.Popen(VIT_SEG + ['bench-node', '--frames', str(camvid_mini), '--model',
                                       str(tiny_model), '--runs', '4', '--gap', '30',
                                       '--threads', '1', '--domain-id', str(DOMAIN)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    nodes: list = []
    try:
        assert wait_for(lambda: me.children(), 60, 0.05), 'bench-node started no node'
        nodes = me.children()
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(40)
        err = proc.stderr.read()
        assert rc == 130 and 'terminate called' not in err and 'Traceback' not in err, (rc, err)
        assert not end_all(nodes), 'the node outlived bench-node'
    finally:
        proc.kill()
        end_all([n for n in nodes if n.is_running()])
