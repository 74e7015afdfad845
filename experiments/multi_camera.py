"""N cameras at 10 Hz each: one node serving them all against N separate nodes.

flock /tmp/vit_cpu.lock python -m experiments.multi_camera --frames ../shared/datasets/camvid \
    --out docs/results/multi_camera.json

For each N (1, 2, 4) and each form -- ``one node`` (``cameras: [cam0, ...]``: one model, one
ONNX Runtime pool, one worker) and ``separate nodes`` (N ``vit_seg_node`` processes, one camera
each, the same parameters) -- the node processes are started afresh, and this process publishes
480x360 rgb8 frames on every camera at ``--rate`` Hz (the cameras' phases spread evenly over the
period) for ``--seconds`` after a warm-up, over Fast DDS with reliable QoS (so that every frame
reaches the node, and a frame not answered is one the node dropped). Per camera: the latency
from publish to its class mask arriving here (p50, p90), frames sent and answered; per form: the
CPU the node processes used (cores: their CPU time over the window's wall time), and their
resident (RSS) and proportional (PSS: shared pages split between the processes) memory at the
end. The forms and the Ns run in rotation, ``--rounds`` times. Writes one JSON with every run
and the machine.

``--model`` may be given several times (e.g. one model exported with ``--batch 1`` and with
``--batch 2``: a node then answers two cameras in one call): every model runs every form and N,
in the same rotation. ``--forms`` restricts the forms; ``--aligned`` publishes every camera's
frame at the same instant (synchronised cameras) instead of spreading their phases.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import numpy as np
import psutil

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
from vit_seg_node.core.stats import percentiles

FORMS = ('one node', 'separate nodes')


def node_setups(form: str, n: int, model: str, threads: int) -> list[tuple[dict, list[str]]]:
    """Return (parameters, ROS arguments) of each node process of a form with ``n`` cameras."""
    base = {'model_path': model, 'threads': threads}
    if form == 'one node':
        cams = [f'cam{k}' for k in range(n)]
        params = {**base, 'cameras': cams}
        for c in cams:
            params[f'qos_overrides./{c}/image.subscription.reliability'] = 'reliable'
            params[f'qos_overrides./vit_seg_node/{c}/class_mask.publisher.reliability'] = \
                'reliable'
        return [(params, [])]
    return [({**base, f'qos_overrides./cam{k}/image.subscription.reliability': 'reliable',
              f'qos_overrides./seg{k}/class_mask.publisher.reliability': 'reliable'},
             ['-r', f'__node:=seg{k}', '-r', f'image:=/cam{k}/image']) for k in range(n)]


def mask_topics(form: str, n: int) -> list[str]:
    """Return the class-mask topic of each camera."""
    if form == 'one node':
        return [f'/vit_seg_node/cam{k}/class_mask' for k in range(n)]
    return [f'/seg{k}/class_mask' for k in range(n)]


class Cameras:
    """Publishers of ``n`` cameras and subscribers of their masks on a probe."""

    def __init__(self, probe, form: str, n: int, frames: list[np.ndarray]) -> None:
        from sensor_msgs.msg import Image

        from vit_seg_node.eval.harness import reliable

        self.n, self.frames = n, frames
        self.sent: list[dict[int, float]] = [{} for _ in range(n)]
        self.got: list[dict[int, float]] = [{} for _ in range(n)]
        self.pubs = [probe.publisher(Image, f'/cam{k}/image', reliable(5)) for k in range(n)]
        for k, topic in enumerate(mask_topics(form, n)):
            probe.node.create_subscription(Image, topic, self._on_mask(k), reliable(5), raw=True)

    def _on_mask(self, k: int):
        from vit_seg_node.ros import cdr

        def on_mask(buf: bytes) -> None:
            now = time.perf_counter()
            seq = cdr.parse_image(buf).header.stamp.sec
            self.got[k].setdefault(seq, now)
        return on_mask

    def ready(self) -> bool:
        """Return whether every camera's image topic has a subscriber."""
        return all(p.get_subscription_count() > 0 for p in self.pubs)

    def play(self, seconds: float, rate: float, first_seq: int, record: bool,
             aligned: bool = False) -> None:
        """Publish every camera at ``rate`` Hz for ``seconds``, phases spread over the period.

        ``aligned``: every camera's frame at the same instant (one after the other).
        """
        from vit_seg_node.ros import cdr

        period = 1.0 / rate
        spread = 0.0 if aligned else period / self.n
        t0 = time.perf_counter()
        slots = [(i * period + k * spread, k, i)
                 for i in range(int(seconds * rate)) for k in range(self.n)]
        for at, k, i in sorted(slots):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            seq = first_seq + i
            buf = cdr.image_bytes(seq, k, f'cam{k}', self.frames[i % len(self.frames)], 'rgb8')
            t = time.perf_counter()
            self.pubs[k].publish(buf)
            if record:
                self.sent[k][seq] = t

    def summary(self) -> list[dict]:
        """Return per camera: frames sent and answered, latency percentiles (ms)."""
        out = []
        for k in range(self.n):
            lat = [(self.got[k][s] - t) * 1e3 for s, t in self.sent[k].items() if s in self.got[k]]
            out.append({'camera': f'cam{k}', 'sent': len(self.sent[k]), 'answered': len(lat),
                        'latency_ms': percentiles(lat, (50, 90)) if lat else None})
        return out


def run_form(form: str, n: int, frames, a, domain: int, model: str) -> dict:
    """Start the nodes of one form, play the cameras, measure; stop the nodes."""
    from vit_seg_node.eval.harness import NodeProcess, Probe, wait_for

    probe = Probe(domain, f'multi_camera_probe_{domain}')
    nodes: list = []
    try:
        cams = Cameras(probe, form, n, frames)
        nodes = [NodeProcess(domain, params, args) for params, args in
                 node_setups(form, n, model, a.threads)]
        if not wait_for(lambda: cams.ready() or not all(p.alive() for p in nodes), 180):
            raise RuntimeError(f'{form}, {n} cameras: the nodes did not subscribe')
        if not all(p.alive() for p in nodes):
            raise RuntimeError(f'{form}: a node exited: {nodes[0].lines[-3:]}')
        time.sleep(1.0)
        cams.play(a.warmup, a.rate, 0, record=False, aligned=a.aligned)
        procs = [psutil.Process(p.proc.pid) for p in nodes]
        cpu0, t0 = sum(sum(p.cpu_times()[:2]) for p in procs), time.monotonic()
        cams.play(a.seconds, a.rate, 10_000, record=True, aligned=a.aligned)
        cpu1, t1 = sum(sum(p.cpu_times()[:2]) for p in procs), time.monotonic()
        time.sleep(1.0)     # the last answers
        mem = [p.memory_full_info() for p in procs]
        return {'form': form, 'model': model, 'cameras': n, 'processes': len(nodes),
                'cpu_cores': (cpu1 - cpu0) / (t1 - t0),
                'rss_mb': sum(m.rss for m in mem) / 2 ** 20,
                'pss_mb': sum(m.pss for m in mem) / 2 ** 20,
                'per_camera': cams.summary()}
    finally:
        probe.close()
        for p in nodes:
            p.stop()


def main(argv: Optional[list[str]] = None) -> int:
    """Run the rounds; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', required=True, help='dataset root with 480x360 frames')
    ap.add_argument('--split', default='val')
    ap.add_argument('--model', action='append',
                    help='model (repeatable; default vit_seg_node/data/models/fast.onnx)')
    ap.add_argument('--forms', nargs='+', default=list(FORMS), choices=FORMS)
    ap.add_argument('--aligned', action='store_true',
                    help='all cameras publish at the same instant (default: phases spread)')
    ap.add_argument('--threads', type=int, default=2, help="every node's threads")
    ap.add_argument('--cameras', type=int, nargs='+', default=[1, 2, 4])
    ap.add_argument('--rate', type=float, default=10.0, help='Hz per camera')
    ap.add_argument('--seconds', type=float, default=15.0)
    ap.add_argument('--warmup', type=float, default=3.0)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--domain-id', type=int, default=64)
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    a.model = a.model or ['vit_seg_node/data/models/fast.onnx']
    from vit_seg_node.eval.harness import terminate_on_sigterm

    terminate_on_sigterm()
    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    runs = []
    for r in range(a.rounds):
        order = [(m, f, n) for n in a.cameras for f in a.forms for m in a.model]
        order = order[r % len(order):] + order[:r % len(order)]
        if r % 2:
            order.reverse()
        for model, form, n in order:
            rec = run_form(form, n, frames, a, a.domain_id, model)
            rec['round'] = r
            runs.append(rec)
            lat = [c['latency_ms']['p50'] for c in rec['per_camera'] if c['latency_ms']]
            print(f'round {r} {model} {form:15s} {n} cameras: p50 {np.round(lat, 1).tolist()} ms, '
                  f'answered {[c["answered"] for c in rec["per_camera"]]} of '
                  f'{[c["sent"] for c in rec["per_camera"]]}, CPU {rec["cpu_cores"]:.2f} cores, '
                  f'RSS {rec["rss_mb"]:.0f} MB, PSS {rec["pss_mb"]:.0f} MB', flush=True)
    write_json(a.out, {'runs': runs, 'rate_hz': a.rate, 'seconds': a.seconds,
                       'threads': a.threads, 'models': a.model, 'forms': a.forms,
                       'aligned': a.aligned,
                       'machine': machine_record(a.threads)})
    return 0


if __name__ == '__main__':
    sys.exit(main())
