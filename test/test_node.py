"""vit_seg_node as a separate process, driven over real Fast DDS on an isolated domain."""

from __future__ import annotations

import json
import os
import subprocess
import time

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image
import yaml

from conftest import ros_domain
from ros_utils import image_msg, mask_of, node_process, NODE_EXE, Probe, wait_for
from vit_seg_node.eval.harness import reliable_overrides
from vit_seg_node.pipeline import SegmentationPipeline

DOMAIN = ros_domain(7)
RELIABLE_NODE = reliable_overrides('/image')
RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      depth=10)


@pytest.fixture()
def probe():
    p = Probe(DOMAIN)
    yield p
    p.close()


def publish_one(pub, msg, received, timeout=30.0):
    """Publish one message once the node subscribes; return the next message received.

    Discovery is asymmetric: the node may see our subscription a moment after we see its
    publisher, and best-effort samples sent before that are lost, so resend a few times.
    """
    assert wait_for(lambda: pub.get_subscription_count() > 0, 20), 'node never subscribed'
    n = len(received)
    deadline = time.time() + timeout
    while time.time() < deadline:
        pub.publish(msg)
        if wait_for(lambda: len(received) > n, 3.0):
            return received[n][1]
    raise AssertionError('no answer')


def diagnostics_values(diag):
    msgs = [m for _, m in diag if m.status and m.status[0].name == '/vit_seg_node: segmentation']
    st = msgs[-1].status[0]
    return st, {kv.key: kv.value for kv in st.values}


@pytest.mark.parametrize('mode', [{}, {'zero_copy': False}])
def test_raw_frames_give_masks_with_same_header(tiny_model, frames, probe, mode):
    """Every encoding gives its mask and header, read in place or as rclpy messages.

    In place from the serialized form is the default; ``zero_copy: false`` takes rclpy messages.
    """
    pipe = SegmentationPipeline(tiny_model, threads=1)
    # reliable: 4-channel 480x360 frames (691 kB) exceed Fast DDS's default 512 kB shared-memory
    # segment and travel as UDP fragments, which best effort loses on a loaded machine
    masks = probe.collect(Image, '/vit_seg_node/class_mask', RELIABLE)
    pub = probe.publisher(Image, '/image', RELIABLE)
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      **RELIABLE_NODE, **mode}):
        for i, enc in enumerate(['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8']):
            rgb = frames[i % len(frames)]
            msg = image_msg(rgb, stamp_ns=1_000_000_000 * (i + 1) + 123, frame_id=f'cam{i}',
                            encoding=enc)
            out = publish_one(pub, msg, masks)
            assert out.header.frame_id == f'cam{i}'
            assert (out.header.stamp.sec, out.header.stamp.nanosec) == (i + 1, 123)
            assert out.encoding == 'mono8'
            assert (out.height, out.width) == rgb.shape[:2]
            src = rgb if enc != 'mono8' else cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
                                                          cv2.COLOR_GRAY2RGB)
            assert np.array_equal(mask_of(out), pipe(src).labels), enc


def test_compressed_input_matches_raw(tiny_model, frames, probe):
    pipe = SegmentationPipeline(tiny_model, threads=1)
    masks = probe.collect(Image, '/vit_seg_node/class_mask', qos_profile_sensor_data)
    pub = probe.publisher(CompressedImage, '/image/compressed', qos_profile_sensor_data)
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'input_transport': 'compressed',
                                      'threads': 1}):
        for i, rgb in enumerate(frames):
            ok, jpg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
            m = CompressedImage(format='jpeg', data=jpg.tobytes())
            m.header.stamp.sec = i + 1
            got = mask_of(publish_one(pub, m, masks))
            agree = np.mean(got == pipe(rgb).labels)
            assert agree > 0.9, agree


def malformed_messages(rgb):
    good = image_msg(rgb, 1)
    bad = []
    m = image_msg(rgb, 1, encoding='rgb8')
    m.encoding = '32FC1'
    bad.append(('encoding', m))
    m = image_msg(rgb, 1)
    m.height = m.width = 0
    m.step = 0
    m.data = b''
    bad.append(('zero_size', m))
    m = image_msg(rgb, 1)
    m.data = bytes(good.data)[:1000]
    bad.append(('truncated', m))
    m = image_msg(rgb, 1)
    m.step = 10
    bad.append(('step', m))
    return bad


def test_flood_of_malformed_frames_leaves_node_alive(tiny_model, frames, probe):
    masks = probe.collect(Image, '/vit_seg_node/class_mask', qos_profile_sensor_data)
    diag = probe.collect(DiagnosticArray, '/diagnostics', 10)
    pub = probe.publisher(Image, '/image', 100)
    cpub = probe.publisher(CompressedImage, '/image/compressed', 100)
    bad = malformed_messages(frames[0])
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      **RELIABLE_NODE}) as p:
        assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
        for i in range(200):
            reason, m = bad[i % len(bad)]
            pub.publish(m)
            time.sleep(0.002)

        def received() -> int:
            return int(diagnostics_values(diag)[1].get('frames_received', 0)) if diag else 0

        # DDS may discard samples the node's executor has not taken yet (keep-last history),
        # so the node sees most, not necessarily all, of the 200
        assert wait_for(lambda: received() >= 100, 30), received()
        time.sleep(1.5)
        st, values = diagnostics_values(diag)
        # every frame the node received is accounted for: rejected or replaced (dropped)
        assert int(values['frames_rejected']) + int(values['frames_dropped']) == \
            int(values['frames_received']), values
        publish_one(pub, image_msg(frames[0], 5), masks)
        assert p.alive()
        time.sleep(1.2)
        st, values = diagnostics_values(diag)
        assert int(values['frames_rejected']) > 0
        for reason in ('encoding', 'zero_size', 'truncated', 'step'):
            assert int(values.get(f'rejected_{reason}', 0)) > 0, reason
    # the compressed path rejects undecodable data the same way
    with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1,
                                      **reliable_overrides('/image/compressed'),
                                      'input_transport': 'compressed'}) as p:
        assert wait_for(lambda: cpub.get_subscription_count() > 0, 20)
        diag.clear()
        for _ in range(20):
            cpub.publish(CompressedImage(format='jpeg', data=b'\xff\xd8garbage'))
        assert wait_for(lambda: diag and int(diagnostics_values(diag)[1].get(
            'rejected_undecodable', 0)) > 0, 30)
        assert p.alive()


def test_params_file_is_honoured_and_bad_values_refused(tiny_model, frames, probe, tmp_path):
    params = yaml.safe_load(open('config/vit_seg.yaml'))
    params['/**']['ros__parameters'].update(output_resolution='network', overlay_alpha=0.25,
                                            model_path=str(tiny_model), threads=1)
    pfile = tmp_path / 'p.yaml'
    pfile.write_text(yaml.safe_dump(params))
    masks = probe.collect(Image, '/vit_seg_node/class_mask', qos_profile_sensor_data)
    pub = probe.publisher(Image, '/image', qos_profile_sensor_data)
    client = probe.node.create_client(SetParameters, '/vit_seg_node/set_parameters')
    with node_process(probe, DOMAIN, {}, ['--params-file', str(pfile)]):
        out = publish_one(pub, image_msg(frames[0], 1), masks)
        assert (out.height, out.width) == (64, 96)  # network resolution from the params file
        assert client.wait_for_service(20)

        def set_param(name, value):
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            fut = client.call_async(SetParameters.Request(parameters=[
                ParameterMsg(name=name, value=v)]))
            assert wait_for(fut.done, 20)
            return fut.result().results[0]
        res = set_param('overlay_alpha', 1.5)
        assert not res.successful and 'overlay_alpha' in res.reason
        assert set_param('overlay_alpha', 0.75).successful
        res = set_param('max_fps', -1.0)
        assert not res.successful and 'max_fps' in res.reason


def test_diagnostics_latency_agrees_with_measured(frames, probe):
    # the shipped reference model: long enough inference for a meaningful comparison
    masks = probe.collect(Image, '/vit_seg_node/class_mask', qos_profile_sensor_data)
    diag = probe.collect(DiagnosticArray, '/diagnostics', 10)
    pub = probe.publisher(Image, '/image', qos_profile_sensor_data)
    sent = {}
    with node_process(probe, DOMAIN, {'threads': 1}):
        assert diag == [] or diagnostics_values(diag)[0].level == DiagnosticStatus.STALE
        assert wait_for(lambda: diag, 10)
        assert diagnostics_values(diag)[0].level == DiagnosticStatus.STALE
        assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
        for i in range(12):
            t = time.monotonic()
            stamp = probe.node.get_clock().now().nanoseconds
            msg = image_msg(frames[i % len(frames)], stamp)
            sent[stamp] = t
            n = len(masks)
            pub.publish(msg)
            assert wait_for(lambda: len(masks) > n, 30)
            time.sleep(0.1)
        time.sleep(1.5)
        st, values = diagnostics_values(diag)
    measured = []
    for t_recv, m in masks:
        stamp = m.header.stamp.sec * 10 ** 9 + m.header.stamp.nanosec
        measured.append((t_recv - sent[stamp]) * 1e3)
    reported = float(values['latency_end_to_end_p50_ms'])
    infer = float(values['latency_infer_p50_ms'])
    ours = float(np.median(measured))
    assert st.level == DiagnosticStatus.OK
    # cores used over each 1 s status: some status covers frames being answered (the last one,
    # 1.5 s after the last frame, may read 0.00 on a fast CPU)
    cores = [float(kv.value) for _, m in diag for s in m.status for kv in s.values
             if s.name == '/vit_seg_node: segmentation' and kv.key == 'cpu_cores_used']
    assert 0.0 < max(cores) <= os.cpu_count()
    # causal bounds, whatever the machine's load: the node's stamp-to-publish time contains its
    # inference and is contained in our publish-to-receive time (+1 ms for clock resolution)
    assert infer <= reported <= ours + 1.0, (infer, reported, ours)
    assert int(values['frames_dropped']) == 0


def test_startup_failures_exit_nonzero(tmp_path):
    env_domain = {'ROS_DOMAIN_ID': str(DOMAIN)}
    import os
    for params in (['-p', f'model_path:={tmp_path / "missing.onnx"}'],
                   ['-p', 'overlay_alpha:=3.0'], ['-p', 'backend:=nope'], ['-p', 'max_fps:=5']):
        r = subprocess.run([NODE_EXE, '--ros-args'] + params, capture_output=True, text=True,
                           timeout=60, env={**os.environ, **env_domain})
        assert r.returncode != 0, params
        out = r.stdout + r.stderr
        assert 'FATAL' in out and 'Traceback' not in out, out


def test_latency_budget_moves_down_the_ladder_and_back(frames, probe):
    """Shipped ladder, budget 10 ms at one thread: off the FP32 rung, to the fastest that fits.

    (The FP32 rung's 3.4 GMACs would need 26 ms at 64 FLOPs a cycle and 4 GHz; one Zen 5 core
    runs mid.onnx in about 19 ms, fast.onnx in about 12. Choosing the most accurate rung that
    fits is test_ladder.py's.)
    """
    masks = probe.collect(Image, '/vit_seg_node/class_mask', RELIABLE)
    pub = probe.publisher(Image, '/image', RELIABLE)
    client = probe.node.create_client(SetParameters, '/vit_seg_node/set_parameters')

    def play(n, first_stamp):
        for i in range(n):
            pub.publish(image_msg(frames[i % len(frames)], first_stamp + i * 10 ** 8,
                                  frame_id=f'f{i}'))
            time.sleep(0.1)
    with node_process(probe, DOMAIN, {'threads': 1, 'latency_budget_ms': 10.0,
                                      **RELIABLE_NODE}):
        values = probe.last_diagnostics()
        assert values['ladder_rungs'] == '3' and values['active_rung'] == '0'
        assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
        time.sleep(0.5)
        play(40, 10 ** 9)
        assert wait_for(lambda: probe.last_diagnostics().get('active_rung') in ('1', '2'), 10)
        d = probe.last_diagnostics()   # the fastest on a 2-core CPU; mid where it holds 10 ms
        assert int(d['ladder_switches']) >= 1
        assert d['active_model'] == {'1': 'camvid_hybrid_mixed',
                                     '2': 'camvid_hybrid_fast'}[d['active_rung']]
        # budget off at run time: back to the most accurate rung at once
        assert client.wait_for_service(20)
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0)
        fut = client.call_async(SetParameters.Request(parameters=[
            ParameterMsg(name='latency_budget_ms', value=v)]))
        assert wait_for(fut.done, 20) and fut.result().results[0].successful
        play(10, 100 * 10 ** 9)
        assert wait_for(lambda: probe.last_diagnostics().get('active_rung') == '0', 10)

        def accounted() -> bool:   # every frame answered or dropped by the latest-frame slot
            d = probe.last_diagnostics()
            return int(d.get('frames_received', -1)) == 50 and \
                int(d.get('frames_published', 0)) + int(d.get('frames_dropped', 0)) == 50
        assert wait_for(accounted, 10), probe.last_diagnostics()
        published = int(probe.last_diagnostics()['frames_published'])
    # how many the slot drops depends on the CPU (the FP32 rung runs longer than the 100 ms
    # between frames on some); the ladder must keep most of them served
    assert published >= 30 and len(masks) == published
    # every mask has the frame's size and header, whichever rung served it
    for _, m in masks:
        assert (m.height, m.width) == frames[0].shape[:2] and m.header.frame_id.startswith('f')


def test_node_session_times_only_the_mask_of_the_frame_in_flight():
    """A late answer to an earlier frame is counted as late, not timed as the current one's."""
    import threading

    from vit_seg_node.eval.node_overhead import NodeSession
    from vit_seg_node.ros.cdr import image_bytes

    session = object.__new__(NodeSession)   # the client's callback alone: no node, no DDS
    session._got, session._arrived, session.late = threading.Event(), 0.0, 0
    session._in_flight = 1

    def mask(index):
        return image_bytes(0, index, 'camera', np.zeros((4, 6), np.uint8), 'mono8')

    session._on_mask(mask(0))
    assert not session._got.is_set() and session.late == 1
    session._on_mask(mask(1))
    assert session._got.is_set() and session._arrived > 0 and session.late == 1
    session._on_mask(b'\x00\x01\x00\x00')   # unreadable: not the frame in flight
    assert session.late == 2


@pytest.mark.parametrize('executor', ['single', 'events'])
def test_bench_node_splits_overhead_into_floor_and_node(tiny_model, frames, tmp_path, executor):
    """Bench-node: raw, node and model-free relay answer every frame; stages from diagnostics.

    With ``executor: events`` the node, the relay and the client all run rclpy's EventsExecutor:
    frames, the diagnostics timer and the parameter services work under it too.
    """
    from vit_seg_node.eval.node_overhead import measure

    out = tmp_path / 'overhead.json'
    spinning = executor == 'single'      # the events run also covers cpu_spinning: false
    r = measure(str(tiny_model), frames[:2], runs=6, threads=1, domain=ros_domain(13),
                out_json=str(out), gap_s=0.02, executor=executor, spinning=spinning)
    assert r['executor'] == executor and r['cpu_spinning'] is spinning
    assert r['answered'] == 6 and r['late_masks'] == 0
    assert r['relay_floor_ms'] and r['relay_floor_ms']['p50'] > 0
    stages = r['node_stages_p50_ms']
    assert set(stages) == {'wait', 'pre', 'infer', 'post', 'publish', 'receive_to_publish', 'own'}
    assert 0 < stages['own'] < stages['receive_to_publish']
    # the node's own work is made of its stages: hand-off, pre, post and publishing
    parts = stages['wait'] + stages['pre'] + stages['post'] + stages['publish']
    assert 0.5 * stages['own'] < parts < 2.0 * stages['own'] + 1.0
    # the floor is subtracted: the overhead above it is smaller by exactly floor / raw
    raw = r['raw_infer_ms']['p50']
    assert r['blocks'] == 4 and r['zero_copy'] is True
    assert r['overhead_vs_node_infer'] == pytest.approx(
        r['node_end_to_end_ms']['p50'] / r['node_stages_p50_ms']['infer'] - 1.0)
    assert r['overhead_above_floor'] == pytest.approx(
        r['overhead'] - r['relay_floor_ms']['p50'] / raw, rel=1e-6, abs=1e-9)
    doc = json.loads(out.read_text())
    assert doc['answered'] == 6
    assert doc['machine']['cpu'] and doc['machine']['cores'] == os.cpu_count()
