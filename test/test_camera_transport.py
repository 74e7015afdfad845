"""Cameras of robot sizes over real Fast DDS: the node's own transport, its silence check, names.

Each DDS test runs on its own ROS domain; publishers with Fast DDS's defaults run in child
processes with every Fast DDS setting removed from their environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import ros_domain, ROOT
from ros_utils import node_process, NODE_EXE, Probe, wait_for
from vit_seg_node.core.card import load_card
from vit_seg_node.ros.arrival import ArrivalWatch
from vit_seg_node.ros.spin import wants_help
from vit_seg_node.ros.transport import (CAMERA_PROFILE, camera_hint, choose_profile,
                                        NODE_PROFILE, UDP_BUFFER_MIN)

DOMAIN = ros_domain(31)
DDS_VARS = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE',
            'FASTDDS_BUILTIN_TRANSPORTS')


def plain_env() -> dict[str, str]:
    """Return this environment without any Fast DDS setting (a default-configured process)."""
    return {k: v for k, v in os.environ.items() if k not in DDS_VARS}


def test_node_profile_is_chosen_only_when_the_user_configured_nothing(tmp_path):
    big, small = UDP_BUFFER_MIN, 212992      # 212992: a stock Linux net.core.rmem_max
    assert choose_profile({}, big, tmp_path) == NODE_PROFILE
    assert choose_profile({}, small, tmp_path) == CAMERA_PROFILE
    assert choose_profile({}, None, tmp_path) == CAMERA_PROFILE
    assert choose_profile({'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'}, big, tmp_path) == NODE_PROFILE
    for var in DDS_VARS:
        assert choose_profile({var: 'x'}, big, tmp_path) is None
    assert choose_profile({'FASTRTPS_DEFAULT_PROFILES_FILE': ''}, big, tmp_path) == NODE_PROFILE
    assert choose_profile({'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}, big, tmp_path) is None
    (tmp_path / 'DEFAULT_FASTRTPS_PROFILES.xml').write_text('<profiles/>')
    assert choose_profile({}, big, tmp_path) is None
    assert NODE_PROFILE.is_file() and CAMERA_PROFILE.is_file()
    assert str(CAMERA_PROFILE) in camera_hint(CAMERA_PROFILE)
    assert 'rmem_max' in camera_hint(CAMERA_PROFILE) and 'rmem_max' not in camera_hint(NODE_PROFILE)


def test_arrival_watch_is_silent_only_while_matched_publishers_send_nothing():
    w = ArrivalWatch(after_s=3.0)
    assert w.update(0, 0, 0.0) is None
    assert w.update(1, 0, 1.0) is None            # matched at 1.0
    assert w.update(1, 0, 3.5) is None
    assert w.update(1, 0, 4.5) == 3.5
    assert w.first_report(4.5) and not w.first_report(5.0)   # said once
    assert w.update(1, 1, 5.5) is None            # a frame arrived
    assert w.update(1, 1, 20.0) is None           # a camera that stops later: stale_timeout's job
    assert w.update(0, 1, 21.0) is None and w.update(1, 1, 22.0) is None
    assert w.update(1, 1, 25.5) == 3.5            # a new publisher, silent again
    assert not w.first_report(25.5)


def test_help_prints_usage_and_starts_nothing():
    assert wants_help(['vit_seg_node', '--help']) and wants_help(['x', '-h', '--ros-args'])
    assert not wants_help(['x', '--ros-args', '-p', 'a:=--help'])
    t = time.monotonic()
    r = subprocess.run([NODE_EXE, '--help'], capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'ROS_DOMAIN_ID': str(DOMAIN)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('usage: vit_seg_node') and 'model_path' in r.stdout
    assert 'ready:' not in r.stdout + r.stderr and time.monotonic() - t < 30


def test_camera_sizes_from_a_default_publisher_arrive_and_every_output_is_complete(tiny_model):
    """640x480, 1280x720, 1920x1080 in rgb8, bgr8 and JPEG, Fast DDS's defaults at both ends.

    The publisher and a subscriber of all three outputs run with Fast DDS as it comes; every
    frame is received and every answer arrives.
    """
    out = subprocess.run(
        [sys.executable, '-m', 'experiments.camera_arrival', '--model', str(tiny_model),
         '--count', '2', '--threads', '1', '--nodes', 'node: its own profile',
         '--publishers', 'publisher: no profile', '--domain-id', str(DOMAIN)],
        cwd=ROOT, env=plain_env(), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith('| no profile')]
    assert len(rows) == 9, out.stdout
    for row in rows:
        assert '| 2 of 2 | 2 / 2 / 2 |' in row, row


def test_best_effort_outputs_all_arrive_at_a_default_subscriber(tiny_model):
    """480x360 overlays (518 kB) exceed a default 512 kB segment: the node's own is 16 MB."""
    r = subprocess.run([sys.executable, str(ROOT / 'test' / 'dds_delivery.py'), str(DOMAIN),
                        str(tiny_model), '5', '30'], env=plain_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got['published'] == 30 and got['dropped'] == 0, got
    assert got['masks'] == 30 and got['overlays'] == 30, got


def test_matched_camera_without_frames_is_reported_once_with_the_fix(tiny_model):
    """Namespaced node: its status carries its full name; a silent publisher is an ERROR.

    Its classes and colours are read-only parameters.
    """
    probe = Probe(DOMAIN, node_fqn='/front/vit_seg_node')
    try:
        with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1},
                          ['-r', '__ns:=/front']) as node:
            status = []
            probe.node.create_subscription(DiagnosticArray, '/diagnostics',
                                           lambda m: status.extend(m.status), 10)
            pub = probe.publisher(Image, '/front/image', qos_profile_sensor_data)
            assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
            assert wait_for(lambda: any('no frame for' in s.message for s in status), 12)
            last = [s for s in status if s.name == '/front/vit_seg_node: segmentation'][-1]
            assert last.level == last.ERROR and str(CAMERA_PROFILE) in last.message
            assert last.hardware_id.startswith('/front/vit_seg_node:')
            assert dict((kv.key, kv.value) for kv in last.values)['publishers_matched'] == '1'
            time.sleep(2.5)
            warnings = [ln for ln in node.lines if 'no frame arrived' in ln]
            assert len(warnings) == 1 and 'FASTRTPS_DEFAULT_PROFILES_FILE=' in warnings[0]
            # the classes and their colours are on the graph, read-only
            client = probe.node.create_client(GetParameters, '/front/vit_seg_node/get_parameters')
            assert client.wait_for_service(20)
            fut = client.call_async(GetParameters.Request(names=['class_names', 'class_colors']))
            assert wait_for(fut.done, 20)
            names, colors = (v.string_array_value for v in fut.result().values)
            card = load_card(tiny_model)
            assert list(names) == card.classes and len(colors) == len(card.classes)
            assert colors[0] == '#%02x%02x%02x' % tuple(card.palette[0])
            client = probe.node.create_client(SetParameters, '/front/vit_seg_node/set_parameters')
            assert client.wait_for_service(20)
            fut = client.call_async(SetParameters.Request(parameters=[ParameterMsg(
                name='class_names', value=ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY,
                                                         string_array_value=['x']))]))
            assert wait_for(fut.done, 20) and not fut.result().results[0].successful
    finally:
        probe.close()


def test_shipped_models_are_taken_by_name(tmp_path):
    from vit_seg_node.pipeline import resolve_model, shipped_models
    from vit_seg_node.ros.params import validate_parameter

    fast = shipped_models()['fast']
    assert resolve_model('fast') == fast and resolve_model('fast.onnx') == fast
    assert resolve_model(str(fast)) == fast and resolve_model('') == shipped_models()['default']
    assert resolve_model('nope.onnx') == Path('nope.onnx')
    assert validate_parameter('model_path', 'fast') is None
    assert validate_parameter('model_path', 'fast.onnx') is None
    assert validate_parameter('model_path', 'nope') is not None
    for name in ('fast', 'fast.onnx'):
        r = subprocess.run([str(Path(sys.executable).parent / 'vit-seg'), 'models', '--path',
                            name], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == str(fast), r.stderr
    # the training-side commands take the names too: label-stride reads the shipped fast model's
    # card and refuses it, one line, because its labels are already at 1/2
    r = subprocess.run([str(Path(sys.executable).parent / 'vit-seg'), 'label-stride', '--model',
                        'fast', '--out', str(tmp_path / 'x.onnx')], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and 'already gives labels at 1/2' in r.stderr, r.stderr
    assert str(fast) in r.stderr and not (tmp_path / 'x.onnx').exists()
    r = subprocess.run([str(Path(sys.executable).parent / 'vit-seg'), 'build-engine', '--onnx',
                        'fast', '--out', str(tmp_path / 'x.engine')], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and 'ONNX Runtime CPU form' in r.stderr, r.stderr


def test_vit_seg_param_gets_and_sets_like_ros2_param(tiny_model):
    exe = str(Path(sys.executable).parent / 'vit-seg')
    env = {**os.environ, 'ROS_DOMAIN_ID': str(DOMAIN)}

    def param(*args):
        return subprocess.run([exe, 'param', *args], capture_output=True, text=True,
                              timeout=60, env=env)
    probe = Probe(DOMAIN)
    try:
        with node_process(probe, DOMAIN, {'model_path': tiny_model, 'threads': 1}):
            r = param('get', '/vit_seg_node', 'class_names')
            assert r.returncode == 0 and r.stdout.startswith("['Sky'"), r.stderr
            assert param('set', '/vit_seg_node', 'max_fps', '5.0').returncode == 0
            assert param('get', '/vit_seg_node', 'max_fps').stdout.strip() == '5.0'
            r = param('set', '/vit_seg_node', 'max_fps', '5000.0')
            assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'refused' in r.stderr
            r = param('get', '/vit_seg_node', 'nope')
            assert r.returncode == 2 and 'no parameter nope' in r.stderr
    finally:
        probe.close()
