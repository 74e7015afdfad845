"""What one ``publish`` of a class mask costs in the node's process.

A 480x360 mono8 mask and a 16-byte one, serialized, into Fast DDS with the node's own profile,
to a reliable subscriber in another process, 20 ms apart; hot (nothing between publishes) and
cache-cold (40 MB touched before each publish, as an inference does).

    python -m experiments.publish_cost [--domain-id 78]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def subscriber() -> None:
    """Take /x (reliable) until killed."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('publish_cost_sub')
    node.create_subscription(Image, '/x', lambda m: None,
                             QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE), raw=True)
    try:
        rclpy.spin(node)
    except BaseException:
        pass


def main() -> int:
    """Print the publish call's p50 per case."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--domain-id', type=int, default=78)
    ap.add_argument('--sub', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ['ROS_DOMAIN_ID'] = str(a.domain_id)
    if a.sub:
        subscriber()
        return 0
    from vit_seg_node.ros.transport import use_own_profile
    use_own_profile()
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from vit_seg_node.core.machine import machine_record
    from vit_seg_node.ros.convert import mask_message

    sub = subprocess.Popen([sys.executable, '-m', 'experiments.publish_cost', '--sub',
                            '--domain-id', str(a.domain_id)])
    try:
        rclpy.init()
        node = rclpy.create_node('publish_cost_pub')
        pub = node.create_publisher(Image, '/x', QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE))
        while pub.get_subscription_count() == 0:
            time.sleep(0.1)
        time.sleep(1.0)
        mask = np.random.default_rng(0).integers(0, 11, (360, 480), dtype=np.uint8)
        small = np.zeros((1, 16), np.uint8)
        junk = np.ones(40 << 17)
        for case in ['mask hot', 'mask cold', '16 bytes hot'] * 2:
            ts = []
            for _ in range(100):
                m = mask_message(small if case.startswith('16') else mask, Header(), True)
                if 'cold' in case:
                    junk += 1
                t = time.perf_counter()
                pub.publish(m)
                ts.append((time.perf_counter() - t) * 1e3)
                time.sleep(0.02)
            print(f'{case}: publish p50 {np.median(ts):.3f} ms', flush=True)
        print(machine_record(1)['cpu'])
        node.destroy_node()
        rclpy.shutdown()
    finally:
        sub.terminate()
        sub.wait(10)
    return 0


if __name__ == '__main__':
    sys.exit(main())
