"""The ROS package: a real colcon build, the launch file, the parameter file."""

import ast
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import yaml

from conftest import ros_domain

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def repo_files() -> list[str]:
    r = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    return [f for f in r.stdout.splitlines() if (ROOT / f).is_file()]


SHIPPED = ('data/models/default.onnx', 'data/models/default.card.yaml', 'data/models/fast.onnx',
           'data/models/fast.card.yaml', 'data/models/mid.onnx', 'data/models/cpu.ladder.yaml',
           'data/bags/camvid_val_sample/metadata.yaml',
           'data/bags/camvid_val_sample/camvid_val_sample.mcap',
           'data/fastdds/node.xml', 'data/fastdds/large_frames.xml')


def copy_source(dest: Path) -> Path:
    """Copy the package's tracked and new files (not the test data) to ``dest``."""
    for f in repo_files():
        if f.startswith('test/data/'):
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return dest


def run_demo(site: Path, tmp_path: Path, domain: int) -> None:
    """Run ``vit-seg demo`` on 3 frames with only ``site`` providing the package; check it."""
    env = {**os.environ, 'PYTHONPATH': str(site)}
    where = 'import vit_seg_node; print(vit_seg_node.__file__)'
    probe = subprocess.run([sys.executable, '-c', where], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)
    assert probe.stdout.startswith(str(site)), probe.stdout   # the installed copy, not the repo
    out = tmp_path / 'demo'
    r = subprocess.run([sys.executable, '-m', 'vit_seg_node.cli', 'demo', '--limit', '3',
                        '--rate', '1', '--threads', '1',
                        '--out', str(out), '--domain-id', str(domain)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads((out / 'replay.json').read_text())
    assert report['answered'] == 3 and report['scored_frames'] == 3


def test_colcon_build_installs_executables_share_models_and_bag(tmp_path):
    copy_source(tmp_path / 'ws' / 'src' / 'vit_seg_node')
    env = {**os.environ, 'PATH': f'{BIN}{os.pathsep}{os.environ["PATH"]}'}
    r = subprocess.run([str(BIN / 'colcon'), 'build', '--event-handlers', 'console_direct-'],
                       cwd=tmp_path / 'ws', env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    inst = tmp_path / 'ws' / 'install' / 'vit_seg_node'
    for exe in ('lib/vit_seg_node/vit_seg_node', 'lib/vit_seg_node/vit-seg'):
        assert os.access(inst / exe, os.X_OK), exe
    share = inst / 'share' / 'vit_seg_node'
    for f in ('package.xml', 'launch/vit_seg.launch.py', 'config/vit_seg.yaml',
              'config/large_frames.xml'):
        assert (share / f).is_file(), f
    assert (inst / 'share/ament_index/resource_index/packages/vit_seg_node').is_file()
    site = next((inst / 'lib').glob('python3*/site-packages'))
    for f in SHIPPED:   # installed once, as package data
        assert (site / 'vit_seg_node' / f).is_file(), f
    assert not (share / 'models').exists()
    run_demo(site, tmp_path, ros_domain(11))


def test_pip_install_non_editable_ships_models_and_bag(tmp_path):
    src = copy_source(tmp_path / 'src')
    site = tmp_path / 'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                        '--no-build-isolation', '--target', str(site), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for f in SHIPPED:
        assert (site / 'vit_seg_node' / f).is_file(), f
    for pkg in ('vit_seg_train', 'vit_seg_optimize'):
        assert (site / pkg / '__init__.py').is_file(), pkg
    assert not (site / 'training').exists()   # no top-level package named `training`
    run_demo(site, tmp_path, ros_domain(12))


def test_package_xml_declares_dependencies():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    deps = {e.tag: set() for e in root}
    for e in root:
        deps[e.tag].add(e.text)
    for d in ('rclpy', 'sensor_msgs', 'diagnostic_msgs', 'python3-numpy', 'python3-opencv',
              'launch_ros'):
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
    assert {'camera', 'model', 'backend', 'params_file', 'namespace', 'fastdds_profile'} <= \
        set(args)
    assert "'FASTRTPS_DEFAULT_PROFILES_FILE'" in src
    setup = (ROOT / 'setup.py').read_text()
    assert "'vit_seg_node = vit_seg_node.ros.node:main'" in setup


def test_config_documents_every_parameter():
    from vit_seg_node.ros.params import PARAMETERS, validate_parameter

    text = (ROOT / 'config' / 'vit_seg.yaml').read_text()
    params = yaml.safe_load(text)['/**']['ros__parameters']
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert validate_parameter(name, value) is None, name
        assert type(value) is type(PARAMETERS[name].default), name
        before = text.split(f'    {name}:')[0].rstrip().splitlines()[-1]
        assert before.strip().startswith('#'), f'{name} has no comment'


def test_readme_lists_the_node_parameters_as_declared():
    from vit_seg_node.ros.params import parameter_table

    readme = (ROOT / 'README.md').read_text()
    assert parameter_table() in readme, 'README parameter table differs from the node: ' \
        'paste vit_seg_node.ros.params.parameter_table()'


def test_events_executor_without_rclpy_experimental_is_a_startup_error(monkeypatch):
    """On a ROS 2 without rclpy.experimental (Humble), executor:=events is one fatal line."""
    import sys

    import pytest

    from vit_seg_node.ros.spin import make_executor, StartupError

    monkeypatch.setitem(sys.modules, 'rclpy.experimental', None)   # import fails
    with pytest.raises(StartupError, match='Jazzy or later'):
        make_executor('events')
