"""Install vit_seg_node: an ament_python ROS 2 package that is also a plain pip package."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'vit_seg_node'


def data_dir(pattern, dest):
    """Install the files matching ``pattern`` under share/vit_seg_node/``dest``."""
    files = [f for f in glob(pattern) if os.path.isfile(f)]
    return (os.path.join('share', PACKAGE, dest), files) if files else None


data_files = [d for d in [
    ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
    ('share/' + PACKAGE, ['package.xml']),
    data_dir('launch/*.launch.py', 'launch'),
    data_dir('config/*.yaml', 'config'),
    data_dir('vit_seg_node/data/models/*', 'models'),
    data_dir('vit_seg_node/data/bags/*', 'bags'),
] if d]

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*', 'training', 'training.*']),
    package_data={PACKAGE: ['data/models/*', 'data/bags/*', 'data/frames/*'],
                  'training': ['configs/*.yaml']},
    data_files=data_files,
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='vit_seg_node maintainers',
    maintainer_email='maintainers@vit-seg-node.invalid',
    description='Frugal ViT semantic segmentation node for ROS 2',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'vit_seg_node = vit_seg_node.ros.node:main',
            'vit-seg = vit_seg_node.cli:main',
        ],
    },
)
