"""Several cameras on one node (one model, one worker), over Fast DDS in a separate process."""

from __future__ import annotations

import os
import subprocess
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image

from conftest import ros_domain
from ros_utils import image_msg, mask_of, node_process, NODE_EXE, Probe, wait_for
from vit_seg_node.eval.harness import reliable
from vit_seg_node.pipeline import SegmentationPipeline

DOMAIN = ros_domain(45)
CAMS = ('front', 'rear')


@pytest.fixture()
def probe():
    p = Probe(DOMAIN, 'cameras_probe')
    yield p
    p.close()


def reliable_cameras(names) -> dict:
    """Node parameters: every camera's image subscription and class mask reliable."""
    params = {}
    for n in names:
        params[f'qos_overrides./{n}/image.subscription.reliability'] = 'reliable'
        params[f'qos_overrides./vit_seg_node/{n}/class_mask.publisher.reliability'] = 'reliable'
    return params


def statuses(diag: list) -> dict:
    """Return the latest DiagnosticStatus of each name seen."""
    out = {}
    for _, arr in diag:
        for st in arr.status:
            out[st.name] = st
    return out


def values(st) -> dict:
    return {kv.key: kv.value for kv in st.values}


def answer_to(pub, masks, msg, timeout: float = 30.0):
    """Publish ``msg`` until its mask (same stamp) arrives; return the mask."""
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    deadline = time.monotonic() + timeout
    assert wait_for(lambda: pub.get_subscription_count() > 0, 20), 'node never subscribed'
    while time.monotonic() < deadline:
        pub.publish(msg)
        for _ in range(30):
            for _, m in reversed(masks):
                if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp:
                    return m
            time.sleep(0.05)
    raise AssertionError(f'no mask for {stamp}')


def test_two_cameras_on_one_model_keep_their_headers_sizes_and_camera_info(
        tiny_model, frames, probe):
    pipe = SegmentationPipeline(tiny_model, threads=1)
    small = cv2.resize(frames[1], (240, 180), interpolation=cv2.INTER_AREA)
    images = {'front': frames[0], 'rear': small}
    masks = {n: probe.collect(Image, f'/vit_seg_node/{n}/class_mask', reliable()) for n in CAMS}
    infos = {n: probe.collect(CameraInfo, f'/vit_seg_node/{n}/camera_info', reliable())
             for n in CAMS}
    pubs = {n: probe.publisher(Image, f'/{n}/image', reliable()) for n in CAMS}
    info_pubs = {n: probe.publisher(CameraInfo, f'/{n}/camera_info', reliable()) for n in CAMS}
    diag = probe.collect(DiagnosticArray, '/diagnostics', 10)
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      'cameras': list(CAMS), **reliable_cameras(CAMS)}) as node:
        for n in CAMS:
            h, w = images[n].shape[:2]
            info = CameraInfo(width=w, height=h, k=[100.0, 0, w / 2, 0, 100.0, h / 2, 0, 0, 1])
            assert wait_for(lambda: info_pubs[n].get_subscription_count() > 0, 20)
            info_pubs[n].publish(info)
        time.sleep(0.3)
        for k in range(3):
            for i, n in enumerate(CAMS):
                msg = image_msg(images[n], (k + 1) * 10 ** 9 + i, frame_id=f'{n}_optical')
                out = answer_to(pubs[n], masks[n], msg)
                assert out.header.frame_id == f'{n}_optical'
                assert (out.height, out.width) == images[n].shape[:2]
                assert np.array_equal(mask_of(out), pipe(images[n]).labels), n
        for n in CAMS:
            assert wait_for(lambda: infos[n], 10), n
            info = infos[n][-1][1]
            assert (info.height, info.width) == images[n].shape[:2]
            assert info.header.frame_id == f'{n}_optical'
        time.sleep(1.5)
        st = statuses(diag)
        node_status = st['/vit_seg_node: segmentation']
        v = values(node_status)
        assert v['ladder_rungs'] == '1' and v['model'] == str(tiny_model)   # one model
        for n in CAMS:
            cv = values(st[f'/vit_seg_node: segmentation: camera {n}'])
            assert int(cv['frames_published']) >= 3, cv
            assert 'latency_receive_to_publish_p50_ms' in cv and 'frames_dropped' in cv
        # one worker thread and one ONNX Runtime session for both cameras
        assert sum('ready:' in s for s in node.lines) == 1


def test_a_camera_that_stops_goes_error_while_the_other_is_served(tiny_model, frames, probe):
    masks = {n: probe.collect(Image, f'/vit_seg_node/{n}/class_mask', reliable()) for n in CAMS}
    pubs = {n: probe.publisher(Image, f'/{n}/image', reliable()) for n in CAMS}
    diag = probe.collect(DiagnosticArray, '/diagnostics', 10)
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      'cameras': list(CAMS), 'stale_timeout': 1.0,
                                      **reliable_cameras(CAMS)}):
        answer_to(pubs['rear'], masks['rear'], image_msg(frames[0], 1))     # rear, then silence
        for i in range(52):                                           # front goes on, 10 Hz
            pubs['front'].publish(image_msg(frames[i % len(frames)], 2 * 10 ** 9 + i))
            time.sleep(0.1)
        # read while front is still fresh: a status 1.2 s after its last frame would call it
        # stale too (stale_timeout 1.0 s); rear has been silent for more than 5 s
        st = statuses(diag)
        rear = st['/vit_seg_node: segmentation: camera rear']
        front = st['/vit_seg_node: segmentation: camera front']
        assert rear.level == DiagnosticStatus.ERROR and 'no frame for' in rear.message
        assert front.level == DiagnosticStatus.OK, front.message
        top = st['/vit_seg_node: segmentation']
        assert top.level == DiagnosticStatus.ERROR and 'rear' in top.message
        assert len(masks['front']) >= 30


def test_a_flooding_camera_does_not_starve_another(tiny_model, frames, probe):
    masks = {n: probe.collect(Image, f'/vit_seg_node/{n}/class_mask', reliable()) for n in CAMS}
    pubs = {n: probe.publisher(Image, f'/{n}/image', reliable(50)) for n in CAMS}
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      'cameras': list(CAMS), **reliable_cameras(CAMS)}):
        for n in CAMS:
            assert wait_for(lambda: pubs[n].get_subscription_count() > 0, 20)
        time.sleep(0.5)
        for i in range(300):                    # front floods; rear sends one frame in ten
            pubs['front'].publish(image_msg(frames[0], 10 ** 9 + i))
            if i % 10 == 0:
                pubs['rear'].publish(image_msg(frames[1], 10 ** 9 + i))
            time.sleep(0.002)
        time.sleep(2.0)
    assert len(masks['rear']) >= 25, len(masks['rear'])     # of 30 sent
    assert len(masks['front']) >= len(masks['rear'])


def test_a_camera_whose_frames_change_size_is_served_with_one_line(tiny_model, frames, probe):
    masks = probe.collect(Image, '/vit_seg_node/front/class_mask', reliable())
    pub = probe.publisher(Image, '/front/image', reliable())
    small = cv2.resize(frames[0], (240, 180), interpolation=cv2.INTER_AREA)
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      'cameras': ['front'],
                                      **reliable_cameras(['front'])}) as node:
        for k, img in enumerate([frames[0], small, small, frames[0]]):
            out = answer_to(pub, masks, image_msg(img, (k + 1) * 10 ** 9))
            assert (out.height, out.width) == img.shape[:2]
        changed = [s for s in node.lines if 'frame size changed' in s]
        assert len(changed) == 1 and '480x360 to 240x180' in changed[0], changed
        assert node.alive()


def test_camera_list_with_single_camera_remaps_warns_once_and_serves_the_cameras(
        tiny_model, frames, probe):
    masks = probe.collect(Image, '/vit_seg_node/front/class_mask', reliable())
    pub = probe.publisher(Image, '/front/image', reliable())
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      'cameras': ['front'], **reliable_cameras(['front'])},
                      ['-r', 'image:=/camera/image_raw']) as node:
        answer_to(pub, masks, image_msg(frames[0], 10 ** 9))
        lines = [s for s in node.lines if 'remaps of' in s]
        assert len(lines) == 1 and "'image'" in lines[0], node.lines


@pytest.mark.parametrize('cameras, message', [
    ("['front', 'front']", 'named more than once'),
    ("['front', 'rear/left']", 'not valid names'),
    ("['']", 'not valid names'),
])
def test_bad_camera_names_are_one_fatal_line(cameras, message):
    r = subprocess.run([NODE_EXE, '--ros-args', '-p', f'cameras:={cameras}'],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'ROS_DOMAIN_ID': str(DOMAIN)})
    out = r.stdout + r.stderr
    assert r.returncode == 1 and message in out and 'Traceback' not in out, out
    assert sum('FATAL' in s for s in out.splitlines()) == 1, out
