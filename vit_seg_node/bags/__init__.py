"""rosbag2 tools: writing bags from image folders, live replay evaluation through the node."""
