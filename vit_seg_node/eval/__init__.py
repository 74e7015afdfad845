"""Evaluation through the running node: rosbag2 writing, live replay, node overhead (rclpy)."""
