"""The model's classes and colours on the ROS graph.

Read-only parameters ``class_names`` (one name per class id) and ``class_colors`` (``#rrggbb``
per class id, the colours of ``~/color_mask`` and ``~/overlay``): ``ros2 param get
/vit_seg_node class_names``. Where ``vision_msgs`` is installed, also ``~/label_info``
(``vision_msgs/LabelInfo``, transient local: a late subscriber gets it).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.qos import DurabilityPolicy, QoSProfile

LABEL_PARAMETERS = ('class_names', 'class_colors')


def hex_colors(palette: list) -> list[str]:
    """Return ``#rrggbb`` strings of a palette of [r, g, b] entries."""
    return ['#%02x%02x%02x' % tuple(int(v) for v in c) for c in palette]


def declare_label_parameters(node, card) -> None:
    """Declare ``class_names`` and ``class_colors`` read-only, from the model card (once)."""
    values = {'class_names': list(card.classes),
              'class_colors': hex_colors(card.palette[:len(card.classes)])}
    about = {'class_names': 'the model\'s class names, index = class id in ~/class_mask',
             'class_colors': 'colour of each class id in ~/color_mask and ~/overlay (#rrggbb)'}
    for name in LABEL_PARAMETERS:
        if not node.has_parameter(name):
            node.declare_parameter(name, values[name],
                                   ParameterDescriptor(name=name, description=about[name],
                                                       read_only=True))


def label_info_publisher(node, card, make_publisher: Callable) -> Optional[Any]:
    """Publish ``~/label_info`` (vision_msgs/LabelInfo, transient local) if vision_msgs exists."""
    try:
        from vision_msgs.msg import LabelInfo, VisionClass
    except ImportError:
        return None
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = make_publisher(LabelInfo, '~/label_info', qos)
    msg = LabelInfo()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(card.classes)]
    pub.publish(msg)
    return pub
