"""Launch vit_seg_node with its parameter file, a camera topic, a model and a backend.

Example: ``ros2 launch vit_seg_node vit_seg.launch.py camera:=/camera/image_raw model:=fast
backend:=onnxruntime namespace:=front`` (model: a shipped model's name or a file; empty: the
shipped default). ``fastdds_profile``: the Fast DDS profile of the node's process; empty: the
node's own (``vit_seg_node.ros.transport``: camera frames of any size from any publisher).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory('vit_seg_node')
    camera = LaunchConfiguration('camera')
    overrides = {'backend': LaunchConfiguration('backend'),
                 'input_transport': LaunchConfiguration('input_transport'),
                 'model_path': LaunchConfiguration('model')}
    remaps = [('image', camera), ('image/compressed', [camera, '/compressed']),
              ('camera_info', LaunchConfiguration('camera_info'))]
    return LaunchDescription([
        DeclareLaunchArgument('camera', default_value='/camera/image_raw',
                              description='image topic (compressed: <camera>/compressed)'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info'),
        DeclareLaunchArgument('model', default_value='',
                              description='model file or shipped name (fast, mid, default); '
                                          'empty: the shipped default'),
        DeclareLaunchArgument('backend', default_value='auto',
                              description='auto | tensorrt | onnxruntime | torch'),
        DeclareLaunchArgument('input_transport', default_value='raw',
                              description='raw | compressed'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'vit_seg.yaml')),
        DeclareLaunchArgument('namespace', default_value=''),
        DeclareLaunchArgument('fastdds_profile', default_value='',
                              description='FASTRTPS_DEFAULT_PROFILES_FILE of the node; empty: '
                                          'the node sets its own'),
        Node(package='vit_seg_node', executable='vit_seg_node', name='vit_seg_node',
             namespace=LaunchConfiguration('namespace'), output='screen',
             parameters=[LaunchConfiguration('params_file'), overrides],
             remappings=remaps,
             additional_env={'FASTRTPS_DEFAULT_PROFILES_FILE':
                             LaunchConfiguration('fastdds_profile')}),
    ])
