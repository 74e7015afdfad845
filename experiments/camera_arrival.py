"""Camera-sized frames through the node over Fast DDS: how many arrive and are answered.

python -m experiments.camera_arrival --model fast --out docs/results/camera_arrival.json

A camera driver is stood in for by a plain rclpy publisher (best effort, keep last 5: the
sensor-data QoS) in a child process, with Fast DDS as it comes ('publisher: no profile') or
with the shipped camera profile ('publisher: large_frames.xml'); Fast DDS reads its profile once
per process. In that process a subscriber of ``~/class_mask``, ``~/color_mask`` and
``~/overlay`` (best effort, default settings) waits for each answer before the next frame is
sent, so it always keeps up. The node runs in its own process, once with Fast DDS's defaults
(``FASTDDS_BUILTIN_TRANSPORTS=DEFAULT``: a user setting, so the node sets nothing, as before
it had a profile of its own) and once as it starts by default (its own profile,
``vit_seg_node.ros.transport``), for raw (rgb8, bgr8) and compressed (JPEG) input. Per size
and encoding: frames the node received (its ``/diagnostics``), and answers of each output that
reached the subscriber; the median publish-to-class-mask time of the answered frames.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import time

import numpy as np

SIZES = ((640, 480), (1280, 720), (1920, 1080))
ENCODINGS = ('rgb8', 'bgr8', 'jpeg')
OUTPUTS = ('class_mask', 'color_mask', 'overlay')
DDS_VARS = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE',
            'FASTDDS_BUILTIN_TRANSPORTS')
NODE_MODES = {'node: Fast DDS defaults': {'FASTDDS_BUILTIN_TRANSPORTS': 'DEFAULT'},
              'node: its own profile': {}}


def publisher_modes() -> dict[str, dict[str, str]]:
    """Return the publisher settings: name -> environment of its process."""
    from vit_seg_node.ros.transport import CAMERA_PROFILE

    return {'publisher: no profile': {},
            'publisher: large_frames.xml': {'FASTRTPS_DEFAULT_PROFILES_FILE': str(CAMERA_PROFILE)}}


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """Return this environment without any Fast DDS setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in DDS_VARS}
    return {**env, **extra}


def camera_frames(root: Path, width: int, height: int, count: int = 2) -> list[np.ndarray]:
    """Return ``count`` CamVid frames scaled to ``width`` x ``height`` (RGB)."""
    import cv2

    from vit_seg_node.core.datasets import SegmentationDataset

    ds = SegmentationDataset(root, 'val', None, cache=False)
    return [cv2.resize(ds.load(i % len(ds))[0], (width, height)) for i in range(count)]


def frame_message(rgb: np.ndarray, encoding: str, stamp_ns: int):
    """Return an Image (rgb8, bgr8) or CompressedImage (jpeg) of ``rgb`` stamped ``stamp_ns``."""
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    if encoding == 'jpeg':
        m = CompressedImage()
        m.format = 'jpeg'
        m.data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    else:
        arr = rgb if encoding == 'rgb8' else np.ascontiguousarray(rgb[:, :, ::-1])
        m = Image()
        m.height, m.width = arr.shape[:2]
        m.encoding, m.step = encoding, arr.shape[1] * 3
        m.data = arr.tobytes()
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    m.header.frame_id = 'camera'
    return m


def stamp_of(msg) -> tuple[int, int]:
    """Return a message's header stamp as a tuple."""
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def run_block(probe, pub, outs: dict, frames: list, encoding: str, n: int, timeout: float,
              stamp0: int) -> dict:
    """Send ``n`` frames one at a time, each once its predecessor is answered or timed out."""
    from vit_seg_node.eval.harness import wait_for

    before = int(probe.last_diagnostics().get('frames_received', 0))
    got = {k: 0 for k in OUTPUTS}
    latencies = []
    for i in range(n):
        stamp = stamp0 + i
        want = divmod(stamp, 10 ** 9)
        marks = {k: len(v) for k, v in outs.items()}
        msg = frame_message(frames[i % len(frames)], encoding, stamp)
        sent = time.monotonic()
        pub.publish(msg)

        def answered(k):
            return any(stamp_of(m) == want for _, m in outs[k][marks[k]:])
        wait_for(lambda: all(answered(k) for k in OUTPUTS), timeout, 0.005)
        for k in OUTPUTS:
            hits = [t for t, m in outs[k][marks[k]:] if stamp_of(m) == want]
            got[k] += bool(hits)
            if k == 'class_mask' and hits:
                latencies.append((hits[0] - sent) * 1e3)
        time.sleep(0.05)
    n_diag = len(probe.diagnostics)
    wait_for(lambda: len(probe.diagnostics) >= n_diag + 2, 5)   # a status after the last frame
    received = int(probe.last_diagnostics().get('frames_received', 0)) - before
    return {'sent': n, 'node_received': received, **got,
            'class_mask_latency_p50_ms': float(np.median(latencies)) if latencies else None}


def child(a: argparse.Namespace) -> dict:
    """Run every node setting and size in this process's Fast DDS setting."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from vit_seg_node.eval.harness import NodeProcess, Probe, wait_for

    probe = Probe(a.domain_id, 'camera_arrival')
    outs = {k: probe.collect(Image, f'/vit_seg_node/{k}', qos_profile_sensor_data)
            for k in OUTPUTS}
    pubs = {'raw': probe.publisher(Image, '/image', qos_profile_sensor_data),
            'compressed': probe.publisher(CompressedImage, '/image/compressed',
                                          qos_profile_sensor_data)}
    sizes = [s for s in SIZES if f'{s[0]}x{s[1]}' in a.sizes]
    frames = {s: camera_frames(Path(a.frames), *s) for s in sizes}
    results: dict = {}
    stamp = time.time_ns()
    try:
        for node_mode in a.nodes:
            for transport in ('raw', 'compressed'):
                encodings = [e for e in a.encodings if (e == 'jpeg') == (transport == 'compressed')]
                if not encodings:
                    continue
                env = {'FASTRTPS_DEFAULT_PROFILES_FILE': '', **NODE_MODES[node_mode]}
                node = NodeProcess(a.domain_id, {'model_path': a.model, 'threads': a.threads,
                                                 'input_transport': transport}, env=env)
                try:
                    node.wait_ready(probe, 120)
                    pub = pubs[transport]
                    wait_for(lambda: pub.get_subscription_count() > 0 and all(
                        probe.node.count_publishers(f'/vit_seg_node/{k}') for k in OUTPUTS), 20)
                    time.sleep(1.0)
                    for (w, h) in sizes:
                        for enc in encodings:
                            r = run_block(probe, pub, outs, frames[(w, h)], enc, a.count,
                                          a.timeout, stamp)
                            stamp += 1000
                            results[f'{node_mode} | {w}x{h} {enc}'] = r
                            print(json.dumps({'setting': f'{node_mode} | {w}x{h} {enc}', **r}),
                                  file=sys.stderr, flush=True)
                finally:
                    node.stop()
    finally:
        probe.close()
    return results


def markdown(results: dict) -> str:
    """Return the arrival table: received / answered (all three outputs) per setting."""
    rows = ['| publisher | node | frame | received by the node | class_mask / color_mask / '
            'overlay at the subscriber | publish -> class_mask p50 |',
            '|---|---|---|---|---|---|']
    for pub_mode, block in results.items():
        for key, r in block.items():
            node_mode, frame = key.split(' | ')
            lat = r['class_mask_latency_p50_ms']
            rows.append(f'| {pub_mode.split(": ")[1]} | {node_mode.split(": ")[1]} | {frame} | '
                        f'{r["node_received"]} of {r["sent"]} | {r["class_mask"]} / '
                        f'{r["color_mask"]} / {r["overlay"]} | '
                        f'{"-" if lat is None else f"{lat:.1f} ms"} |')
    return '\n'.join(rows) + '\n'


def main(argv: list[str] | None = None) -> int:
    """Run each publisher setting in a child process; write JSON and the Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default='fast', help='the node\'s model_path (default: fast)')
    mini = Path(__file__).resolve().parent.parent / 'test' / 'data' / 'camvid_mini'
    ap.add_argument('--frames', default=str(mini),
                    help='dataset root whose val frames are scaled to each camera size')
    ap.add_argument('--count', type=int, default=10, help='frames per size and encoding')
    ap.add_argument('--timeout', type=float, default=2.0, help='seconds to wait for an answer')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--sizes', nargs='+', default=[f'{w}x{h}' for w, h in SIZES])
    ap.add_argument('--encodings', nargs='+', default=list(ENCODINGS), choices=ENCODINGS)
    ap.add_argument('--nodes', nargs='+', default=list(NODE_MODES), choices=list(NODE_MODES))
    ap.add_argument('--publishers', nargs='+', default=None,
                    help='publisher settings (default: both)')
    ap.add_argument('--domain-id', type=int, default=77)
    ap.add_argument('--out', help='JSON report (a .md table beside it)')
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a)))
        return 0
    from vit_seg_node.core.io import atomic_write_text, write_json
    from vit_seg_node.core.machine import machine_record

    results = {}
    for name, env in publisher_modes().items():
        if a.publishers and name not in a.publishers:
            continue
        cmd = [sys.executable, '-m', 'experiments.camera_arrival', '--child'] + \
            [x for x in (argv if argv is not None else sys.argv[1:]) if x != '--child']
        r = subprocess.run(cmd, env=clean_env(env), stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parent.parent)
        if r.returncode != 0:
            print(f'camera_arrival: {name} failed (exit {r.returncode})', file=sys.stderr)
            return 1
        results[name] = json.loads(r.stdout.strip().splitlines()[-1])
    table = markdown(results)
    print(table)
    if a.out:
        write_json(a.out, {'results': results, 'model': a.model, 'count': a.count,
                           'machine': machine_record(a.threads), 'command': 'python -m '
                           'experiments.camera_arrival ' + ' '.join(argv or sys.argv[1:])})
        atomic_write_text(Path(a.out).with_suffix('.md'), table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
