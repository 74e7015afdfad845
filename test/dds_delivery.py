"""Count what a best-effort subscriber of ~/class_mask and ~/overlay receives (run as a script).

Usage: python test/dds_delivery.py DOMAIN MODEL RATE N: publishes N 480x360 frames at RATE Hz to
a node process and prints one JSON line. Runs in its own process because Fast DDS reads its XML
profile once per process, at the first participant.
"""

import json
from pathlib import Path
import sys
import time

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

sys.path.insert(0, str(Path(__file__).parent))
from ros_utils import image_msg  # noqa: E402
from vit_seg_node.core.datasets import SegmentationDataset  # noqa: E402
from vit_seg_node.eval.harness import NodeProcess, Probe, wait_for  # noqa: E402


def main() -> None:
    """Publish, count, print."""
    domain, model, rate, n = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    probe = Probe(domain)
    masks = probe.collect(Image, '/vit_seg_node/class_mask', qos_profile_sensor_data)
    overlays = probe.collect(Image, '/vit_seg_node/overlay', qos_profile_sensor_data)
    pub = probe.publisher(Image, '/image', qos_profile_sensor_data)
    node = NodeProcess(domain, {'model_path': model, 'threads': 1})
    try:
        node.wait_ready(probe)
        mini = Path(__file__).parent / 'data' / 'camvid_mini'
        frames = [SegmentationDataset(mini, 'val', cache=False).load(i)[0] for i in range(2)]
        wait_for(lambda: pub.get_subscription_count() > 0
                 and probe.node.count_publishers('/vit_seg_node/overlay') > 0, 30)
        time.sleep(1.0)
        for i in range(n):
            pub.publish(image_msg(frames[i % 2], probe.node.get_clock().now().nanoseconds))
            time.sleep(1.0 / rate)
        wait_for(lambda: len(masks) >= n and len(overlays) >= n, 5)
        time.sleep(1.5)
        print(json.dumps({'masks': len(masks), 'overlays': len(overlays),
                          'published': int(probe.last_diagnostics().get('frames_published', -1)),
                          'dropped': int(probe.last_diagnostics().get('frames_dropped', -1))}))
    finally:
        node.stop()
        probe.close()


if __name__ == '__main__':
    main()
