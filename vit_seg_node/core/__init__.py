"""The ROS-free, torch-free core: model card, processing, datasets, metrics, stats, atomic io."""
