"""The ROS package: a real colcon build, the launch file, the parameter file."""

import ast
import os
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def repo_files() -> list[str]:
    r = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    return [f for f in r.stdout.splitlines() if (ROOT / f).is_file()]


def test_colcon_build_installs_executables_and_share(tmp_path):
    pkg = tmp_path / 'ws' / 'src' / 'vit_seg_node'
    for f in repo_files():
        if f.startswith('test/data/'):
            continue
        (pkg / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, pkg / f)
    env = {**os.environ, 'PATH': f'{BIN}{os.pathsep}{os.environ["PATH"]}'}
    r = subprocess.run([str(BIN / 'colcon'), 'build', '--event-handlers', 'console_direct-'],
                       cwd=tmp_path / 'ws', env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    inst = tmp_path / 'ws' / 'install' / 'vit_seg_node'
    for exe in ('lib/vit_seg_node/vit_seg_node', 'lib/vit_seg_node/vit-seg'):
        assert os.access(inst / exe, os.X_OK), exe
    share = inst / 'share' / 'vit_seg_node'
    for f in ('package.xml', 'launch/vit_seg.launch.py', 'config/vit_seg.yaml',
              'models/default.onnx', 'models/default.card.yaml'):
        assert (share / f).is_file(), f
    assert (inst / 'share/ament_index/resource_index/packages/vit_seg_node').is_file()


def test_package_xml_declares_dependencies():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    deps = {e.tag: set() for e in root}
    for e in root:
        deps[e.tag].add(e.text)
    for d in ('rclpy', 'sensor_msgs', 'diagnostic_msgs', 'python3-numpy', 'python3-opencv'):
        assert d in deps['exec_depend'], d
    for d in ('ament_flake8', 'ament_pep257', 'ament_copyright', 'python3-pytest'):
        assert d in deps['test_depend'], d
    assert root.find('export/build_type').text == 'ament_python'


def test_launch_file_names_installed_executable_and_config():
    # ros2 launch is not installable here (no launch/launch_ros wheels): check the file itself.
    src = (ROOT / 'launch' / 'vit_seg.launch.py').read_text()
    tree = ast.parse(src)
    calls = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'Node':
            calls = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(calls['package']) == 'vit_seg_node'
    assert ast.literal_eval(calls['executable']) == 'vit_seg_node'
    assert "'config', 'vit_seg.yaml'" in src
    args = [ast.literal_eval(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', None) == 'DeclareLaunchArgument']
    assert {'camera', 'model', 'backend', 'params_file', 'namespace'} <= set(args)
    setup = (ROOT / 'setup.py').read_text()
    assert "'vit_seg_node = vit_seg_node.ros.node:main'" in setup


def test_config_documents_every_parameter():
    from vit_seg_node.ros.node import PARAMETERS, validate_parameter

    text = (ROOT / 'config' / 'vit_seg.yaml').read_text()
    params = yaml.safe_load(text)['/**']['ros__parameters']
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert validate_parameter(name, value) is None, name
        assert type(value) is type(PARAMETERS[name][0]), name
        before = text.split(f'    {name}:')[0].rstrip().splitlines()[-1]
        assert before.strip().startswith('#'), f'{name} has no comment'
