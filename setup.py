"""Install vit_seg_node: an ament_python ROS 2 package that is also a plain pip package.

Three Python packages: ``vit_seg_node`` (the runtime: no torch), and from the ``training/``
source root ``vit_seg_train`` (PyTorch training) and ``vit_seg_optimize`` (export, quantization,
benchmark), which plug their backend and subcommands into the runtime through entry points.
The shipped models and demo bag are package data of ``vit_seg_node`` (installed once, found
beside the code by ``vit_seg_node.pipeline.DATA_DIR``); ROS gets the launch and config files
in share/.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vit_seg_node'


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=(find_packages(include=[PACKAGE, PACKAGE + '.*'])
              + find_packages('training', include=['vit_seg_train*', 'vit_seg_optimize*'])),
    package_dir={'vit_seg_train': 'training/vit_seg_train',
                 'vit_seg_optimize': 'training/vit_seg_optimize'},
    package_data={PACKAGE: ['data/models/*', 'data/bags/*/*', 'data/fastdds/*.xml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config',
         glob('config/*.yaml') + glob(PACKAGE + '/data/fastdds/*.xml')),
    ],
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
            'vit_seg_lifecycle_node = vit_seg_node.ros.lifecycle:main',
            'vit-seg = vit_seg_node.cli:main',
        ],
        'vit_seg.commands': [
            'train = vit_seg_train.cli:register',
            'optimize = vit_seg_optimize.cli:register',
        ],
        'vit_seg.backends': [
            'torch = vit_seg_train.torch_backend:TorchBackend',
        ],
    },
)
