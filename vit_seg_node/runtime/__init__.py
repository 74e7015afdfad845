"""ROS-free inference core: model card, processing, metrics, backends."""
