"""Two cameras, one model with a static batch of two: their frames in one call, over Fast DDS."""

from __future__ import annotations

import os
import subprocess
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
import yaml

from conftest import ros_domain
from ros_utils import image_msg, mask_of, node_process, NODE_EXE, Probe, wait_for
from test_cameras import reliable_cameras, statuses, values
from vit_seg_node.eval.harness import reliable
from vit_seg_node.pipeline import SegmentationPipeline

DOMAIN = ros_domain(47)
CAMS = ('left', 'right')


@pytest.fixture()
def probe():
    p = Probe(DOMAIN, 'batch_probe')
    yield p
    p.close()


def test_two_cameras_share_model_calls_and_keep_their_headers_and_sizes(
        tiny_model_b2, frames, probe):
    pipe = SegmentationPipeline(tiny_model_b2, threads=1)
    images = {'left': frames[0],
              'right': cv2.resize(frames[1], (240, 180), interpolation=cv2.INTER_AREA)}
    expected = {n: pipe(images[n]).labels for n in CAMS}     # each alone in the batch
    masks = {n: probe.collect(Image, f'/vit_seg_node/{n}/class_mask', reliable(100))
             for n in CAMS}
    pubs = {n: probe.publisher(Image, f'/{n}/image', reliable(100)) for n in CAMS}
    diag = probe.collect(DiagnosticArray, '/diagnostics', 10)
    sent = 60
    with node_process(probe, DOMAIN, {'model_path': tiny_model_b2, 'threads': 1,
                                      'cameras': list(CAMS), **reliable_cameras(CAMS)}) as node:
        for n in CAMS:
            assert wait_for(lambda: pubs[n].get_subscription_count() > 0, 20), n
        time.sleep(0.5)
        for k in range(sent):               # both cameras together, faster than served
            for i, n in enumerate(CAMS):
                pubs[n].publish(image_msg(images[n], (k + 1) * 10 ** 9 + i,
                                          frame_id=f'{n}_optical'))
            time.sleep(0.002)
        assert wait_for(lambda: all(masks[n] for n in CAMS), 20)
        time.sleep(2.5)                      # the last answers, then a diagnostics round
        assert node.alive()
    for i, n in enumerate(CAMS):
        got = [m for _, m in masks[n]]
        assert got, n
        for m in got:
            assert m.header.frame_id == f'{n}_optical' and m.header.stamp.nanosec == i
            assert (m.height, m.width) == images[n].shape[:2]
            assert np.array_equal(mask_of(m), expected[n]), n
    st = statuses(diag)
    v = values(st['/vit_seg_node: segmentation'])
    calls, frames_out = int(v['model_calls']), sum(len(masks[n]) for n in CAMS)
    assert v['model_batch'] == '2' and int(v['batched_calls']) >= 5, v
    assert float(v['frames_per_call']) > 1.3 and calls < frames_out, v
    for n in CAMS:
        cv = values(st[f'/vit_seg_node: segmentation: camera {n}'])
        assert int(cv['frames_published']) + int(cv['frames_dropped']) == sent, cv
        assert 'latency_infer_p50_ms' in cv and 'latency_receive_to_publish_p50_ms' in cv


def test_a_ladder_whose_rungs_differ_in_batch_is_one_fatal_line(tiny_model, tiny_model_b2,
                                                                tmp_path):
    ladder = tmp_path / 'mixed.ladder.yaml'
    ladder.write_text(yaml.safe_dump({'rungs': [str(tiny_model), str(tiny_model_b2)]}))
    r = subprocess.run([NODE_EXE, '--ros-args', '-p', f'model_ladder:={ladder}', '-p',
                        'latency_budget_ms:=100.0', '-p', 'threads:=1'],
                       capture_output=True, text=True, timeout=90,
                       env={**os.environ, 'ROS_DOMAIN_ID': str(DOMAIN)})
    out = r.stdout + r.stderr
    assert r.returncode == 1 and 'Traceback' not in out, out
    fatal = [s for s in out.splitlines() if 'FATAL' in s]
    assert len(fatal) == 1 and 'batch of 2' in fatal[0] and 'same batch' in fatal[0], out
