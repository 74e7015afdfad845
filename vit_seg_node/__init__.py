"""vit_seg_node: frugal Vision Transformer semantic segmentation for ROS 2.

The package is split by what runs where:

* ``vit_seg_node.runtime`` -- ROS-free inference core (model card, pre/post-processing, metrics,
  backends). Imports neither ``rclpy`` nor ``torch`` at module level.
* ``vit_seg_node.ros`` -- the only modules that import ``rclpy``.
* ``vit_seg_node.bags`` -- rosbag2 writing and live replay evaluation.
* ``vit_seg_node.cli`` -- the ``vit-seg`` command line, thin wrappers over library functions.
"""

__version__ = '0.1.0'
