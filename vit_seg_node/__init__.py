"""vit_seg_node: frugal Vision Transformer semantic segmentation for ROS 2.

Packages, arrows pointing down (a test enforces them):

* ``vit_seg_node.core`` -- model card, pre/post-processing, datasets, metrics, stats, atomic io.
  Imports neither ``rclpy`` nor ``torch`` nor a backend library.
* ``vit_seg_node.backends`` -- the backend registry; ONNX Runtime and TensorRT, each imported
  only when created; more through the ``vit_seg.backends`` entry points.
* ``vit_seg_node.ros`` -- the node (``rclpy``).
* ``vit_seg_node.eval`` -- make-bag, replay, node overhead: the other ``rclpy`` importer.
* ``vit_seg_node.cli`` -- ``vit-seg``; the training and optimisation packages add their
  subcommands through the ``vit_seg.commands`` entry points.
"""

__version__ = '0.1.0'
