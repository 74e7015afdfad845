"""make-bag round trips and live replay through the node (real rosbag2 files, real DDS)."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import ros_domain
from vit_seg_node.eval.make_bag import GT_TOPIC, IMAGE_TOPIC, make_bag, typestore
from vit_seg_node.eval.replay import replay, scan_bag, stamp_ns

DOMAIN = ros_domain(23)
VIT_SEG = [sys.executable, '-m', 'vit_seg_node.cli']


def read_all(bag: Path) -> dict[str, list]:
    from rosbags.rosbag2 import Reader

    ts = typestore()
    out: dict[str, list] = {}
    with Reader(bag) as r:
        for c, t, raw in r.messages():
            out.setdefault(c.topic, []).append((t, ts.deserialize_cdr(raw, c.msgtype)))
    return out


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_make_bag_round_trip_is_exact(camvid_mini, tmp_path, storage):
    bag = tmp_path / 'bag'
    make_bag(camvid_mini / 'val', bag, labels=camvid_mini / 'valannot', storage=storage,
             rate=2.0)
    msgs = read_all(bag)
    files = sorted((camvid_mini / 'val').iterdir())
    assert len(msgs[IMAGE_TOPIC]) == len(files) == len(msgs[GT_TOPIC])
    for i, ((t, img), (_, gt), f) in enumerate(zip(msgs[IMAGE_TOPIC], msgs[GT_TOPIC], files)):
        expected = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        got = np.asarray(img.data).reshape(img.height, img.width, 3)
        assert img.encoding == 'rgb8' and np.array_equal(got, expected)
        lbl = cv2.imread(str(camvid_mini / 'valannot' / f.name), cv2.IMREAD_UNCHANGED)
        assert gt.encoding == 'mono8'
        assert np.array_equal(np.asarray(gt.data).reshape(gt.height, gt.width), lbl)
        assert stamp_ns(img.header) == stamp_ns(gt.header) == t
        assert t == 1_700_000_000 * 10 ** 9 + i * 500_000_000
    assert len(msgs['/camera/camera_info']) == len(files)


def test_make_bag_cli_compressed(camvid_mini, tmp_path):
    bag = tmp_path / 'cbag'
    r = subprocess.run(VIT_SEG + ['make-bag', '--images', str(camvid_mini / 'val'), '--out',
                                  str(bag), '--compressed', '--storage', 'sqlite3'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    msgs = read_all(bag)
    (t, m), = msgs[IMAGE_TOPIC + '/compressed'][:1]
    assert m.format == 'jpeg'
    assert cv2.imdecode(np.asarray(m.data), cv2.IMREAD_COLOR).shape == (360, 480, 3)
    r = subprocess.run(VIT_SEG + ['make-bag', '--images', str(tmp_path / 'none'), '--out',
                                  str(tmp_path / 'x')], capture_output=True, text=True)
    assert r.returncode == 2 and 'not found' in r.stderr


def test_replay_mIoU_equals_eval_when_nothing_drops(camvid_mini, tmp_path):
    bag = tmp_path / 'bag'
    make_bag(camvid_mini / 'val', bag, labels=camvid_mini / 'valannot')
    rep = replay(bag, tmp_path / 'r.json', rate=4.0, domain=DOMAIN, threads=1)
    ev = tmp_path / 'eval.json'
    r = subprocess.run(VIT_SEG + ['eval', '--data', str(camvid_mini), '--split', 'val',
                                  '--json', str(ev), '--threads', '1'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ref = json.loads(ev.read_text())
    assert rep['dropped'] == 0 and rep['unanswered'] == 0 and rep['num_frames'] == 3
    assert rep['scored_frames'] == 3
    assert abs(rep['miou'] - ref['miou']) <= 0.005
    saved = json.loads((tmp_path / 'r.json').read_text())
    for key in ('miou', 'per_class_iou', 'latency_ms', 'fps', 'dropped', 'unanswered',
                'num_frames'):
        assert key in saved
    assert set(saved['latency_ms']) == {'p50', 'p95', 'p99'}
    assert saved['machine']['cpu'] and saved['machine']['cores']   # the CPU of the timing
    assert (tmp_path / 'r.md').read_text().startswith('# Replay')
    assert list(tmp_path.glob('r_overlay_*.png'))


def test_fast_replay_drops_frames_and_node_survives(camvid_mini, tmp_path):
    frames = tmp_path / 'frames'
    frames.mkdir()
    src = sorted((camvid_mini / 'val').iterdir())
    for i in range(40):
        shutil.copy(src[i % len(src)], frames / f'f{i:03d}.png')
    bag = tmp_path / 'bag'
    make_bag(frames, bag, rate=1.0)
    rep = replay(bag, tmp_path / 'fast.json', rate=200.0, domain=DOMAIN, threads=1,
                 drain_s=5.0)
    assert rep['dropped'] > 0
    assert rep['node_alive']
    assert rep['miou'] is None  # no ground truth in this bag: timing only
    assert rep['answered'] > 0 and rep['answered'] + rep['unanswered'] == 40


def test_corrupt_message_and_unknown_type_are_skipped(camvid_mini, tmp_path):
    from rosbags.rosbag2 import Writer

    good = tmp_path / 'good'
    make_bag(camvid_mini / 'val', good, labels=camvid_mini / 'valannot', storage='sqlite3')
    ts = typestore()
    bad = tmp_path / 'bad'
    with Writer(bad, version=8) as w:
        conns = {}
        custom = w.add_connection('/custom', 'my_pkg/msg/Thing', msgdef='int32 x',
                                  rihs01='RIHS01_' + '0' * 64)
        w.write(custom, 1, b'\x00\x01\x00\x00\x07\x00\x00\x00')
        for topic, items in read_all(good).items():
            for k, (t, msg) in enumerate(items):
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, msg.__msgtype__, typestore=ts)
                raw = ts.serialize_cdr(msg, msg.__msgtype__)
                if topic == IMAGE_TOPIC and k == 1:
                    raw = raw[:100]  # truncated: cannot be deserialized
                w.write(conns[topic], t, raw)
    contents = scan_bag(bad)
    assert contents.skipped['unknown_type'] == 1
    rep = replay(bad, tmp_path / 'bad.json', rate=4.0, domain=DOMAIN, threads=1)
    assert rep['skipped'] == {'unknown_type': 1, 'corrupt': 1}
    assert rep['num_frames'] == 2 and rep['answered'] == 2 and rep['scored_frames'] == 2
    assert rep['miou'] is not None


def test_unreadable_bag_is_one_line_error(tmp_path):
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'metadata.yaml').write_text('not: [a bag')
    r = subprocess.run(VIT_SEG + ['replay', '--bag', str(tmp_path / 'junk'), '--json',
                                  str(tmp_path / 'r.json')], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and 'cannot read bag' in r.stderr
    assert 'Traceback' not in r.stderr


def test_demo_runs_on_a_shortened_bag(tmp_path):
    """The fast model, warmed up, on $ROS_DOMAIN_ID; a run over 5 s prints its progress."""
    from vit_seg_node.core.card import load_card
    from vit_seg_node.pipeline import shipped_models

    # at the recorded 1 Hz every frame is answered even on a busy machine (at the demo's
    # default 4x, a frame can be replaced while the previous one is processed)
    r = subprocess.run(VIT_SEG + ['demo', '--out', str(tmp_path), '--limit', '7', '--rate', '1',
                                  '--threads', '1', '--warmup', '2'],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'ROS_DOMAIN_ID': str(DOMAIN)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'ROS domain {DOMAIN}, after 2 warm-up frames' in r.stdout
    assert 'replay: ' in r.stderr and ' answered, ' in r.stderr       # progress
    rep = json.loads((tmp_path / 'replay.json').read_text())
    assert rep['num_frames'] == 7 and rep['answered'] == 7      # warm-up frames not counted
    assert rep['model'] == load_card(shipped_models()['fast']).name and rep['miou'] > 0.3
    assert '| frames |' in r.stdout


def test_damaged_mcap_chunk_ends_the_stream_counted(camvid_mini, tmp_path):
    from vit_seg_node.eval.replay import open_reader, read_messages

    bag = tmp_path / 'bag'
    make_bag(camvid_mini / 'val', bag, labels=camvid_mini / 'valannot')   # zstd chunks
    f = next(bag.glob('*.mcap'))
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(4096)    # zero a stretch inside a compressed chunk
    f.write_bytes(bytes(data))
    skipped = collections.Counter()
    reader = open_reader(bag)
    try:
        got = list(read_messages(reader, reader.connections, skipped))
    finally:
        reader.close()
    assert skipped['corrupt_storage'] == 1 and len(got) < 3 * len(list(
        (camvid_mini / 'val').glob('*.png')))


def test_sigterm_to_replay_stops_its_node(camvid_mini, tmp_path):
    import psutil

    bag = tmp_path / 'bag'
    make_bag(camvid_mini / 'val', bag, rate=0.2)   # slow: the replay is still running
    proc = subprocess.Popen(VIT_SEG + ['replay', '--bag', str(bag), '--json',
                                       str(tmp_path / 'r.json'), '--domain-id', str(DOMAIN)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    me = psutil.Process(proc.pid)

    def node_children():
        return [c for c in me.children(recursive=True)
                if 'vit_seg_node.ros.node' in ' '.join(c.cmdline())]
    deadline = time.time() + 60
    while time.time() < deadline and not node_children():
        time.sleep(0.2)
    nodes = node_children()
    assert nodes, 'the replay never started its node'
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    gone, alive = psutil.wait_procs(nodes, timeout=15)
    for p in alive:
        p.kill()
    assert not alive, 'the node outlived the replay'
