"""Regression tests for the faults a fault-injection run found: one per promise, table-driven.

CLI promise: bad input -> exit code 2, one line on stderr, no traceback, no partial output.
Node promise: a frame that cannot be used is rejected and counted before it costs memory.
"""

from __future__ import annotations

import collections
import math
import shutil
import struct
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from vit_seg_node.cli import main
from vit_seg_node.core.card import load_card, ModelCardError
from vit_seg_node.core.imagesize import encoded_size
from vit_seg_node.ros.convert import compressed_to_rgb, FrameError, image_to_rgb


def jpeg_declaring(w: int, h: int) -> bytes:
    """Return a valid small JPEG whose frame header is patched to declare ``w`` x ``h``."""
    ok, buf = cv2.imencode('.jpg', np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(buf.tobytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + struct.unpack('>H', bytes(data[i + 2:i + 4]))[0]
    data[i + 5:i + 9] = struct.pack('>HH', h, w)
    return bytes(data)


def png_declaring(w: int, h: int) -> bytes:
    ok, buf = cv2.imencode('.png', np.zeros((16, 16, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = struct.pack('>II', w, h)
    return bytes(data)


class Msg:
    def __init__(self, data: bytes, fmt: str = 'jpeg') -> None:
        self.data, self.format = data, fmt


@pytest.mark.parametrize('data', [jpeg_declaring(20000, 20000), png_declaring(20000, 20000)])
def test_decompression_bomb_is_rejected_before_decoding(data):
    assert encoded_size(data) == (20000, 20000) and len(data) < 2000
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(FrameError) as exc:
        compressed_to_rgb(Msg(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert exc.value.reason == 'too_large'
    assert peak < 5 << 20 and time.perf_counter() - t < 0.5


def test_raw_frame_over_the_pixel_cap_is_rejected():
    class Raw:
        encoding, height, width, step, data = 'rgb8', 6000, 8000, 24000, b'\0' * 10

    with pytest.raises(FrameError) as exc:
        image_to_rgb(Raw(), max_pixels=4096 * 4096)
    assert exc.value.reason == 'too_large'


def test_decoder_messages_go_to_the_callback_not_stderr(capfd):
    ok, buf = cv2.imencode('.jpg', (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(
        np.uint8))
    data = buf.tobytes()
    corrupt = data[:300] + b'\x00\x01\x02' + data[300:]   # libjpeg: "extraneous bytes"
    warnings = []
    compressed_to_rgb(Msg(corrupt), warn=warnings.append)
    for bad in (b'\xff\xd8garbage', data[:len(data) // 2]):
        with pytest.raises(FrameError):
            compressed_to_rgb(Msg(bad), warn=warnings.append)
    assert capfd.readouterr().err == ''
    assert any('Corrupt JPEG' in w for w in warnings), warnings


def test_published_images_hand_rclpy_its_own_byte_type():
    """Published payloads are ``array.array('B')``, which message setters take as they are.

    Given ``bytes``, a setter with field checks on (Humble; Jazzy with
    ROS_PYTHON_CHECK_FIELDS=1) checks every element in Python.
    """
    import array

    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from vit_seg_node.ros.convert import fill_image

    class Recorder:
        pass
    image = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)[:, ::-1]   # not contiguous
    rec = Recorder()
    fill_image(rec, image, 'rgb8', Header())
    assert type(rec.data) is array.array and rec.data.typecode == 'B'
    msg = Image()
    fill_image(msg, image, 'rgb8', Header(frame_id='cam'))
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 8, 24, 'rgb8')
    assert np.array_equal(image_to_rgb(msg), image)


def test_yaml_alias_bomb_in_a_card_is_refused_fast(tiny_model, tmp_path):
    model = tmp_path / 'm.onnx'
    shutil.copy(tiny_model, model)
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f'{"abcdefghi"[i]}: &{"abcdefghi"[i]} [' + ','.join(
            [f'*{"abcdefghi"[i - 1]}'] * 9) + ']')
    model.with_suffix('.card.yaml').write_text('\n'.join(lines) + '\n')
    t = time.perf_counter()
    with pytest.raises(ModelCardError, match='aliases'):
        load_card(model)
    assert time.perf_counter() - t < 1.0


# ------------------------------------------------------------------------------ CLI table
@pytest.fixture()
def workspace(tmp_path, tiny_model, camvid_mini):
    """Return a tiny model, a copy with a bad card, a frame, a dataset with a bad label."""
    ws = collections.namedtuple('WS', 'root model image data badcard bomb ckpt_st ckpt_pt')
    shutil.copy(tiny_model, tmp_path / 'm.onnx')
    shutil.copy(tiny_model.with_suffix('.card.yaml'), tmp_path / 'm.card.yaml')
    shutil.copy(tiny_model, tmp_path / 'bad.onnx')
    (tmp_path / 'bad.card.yaml').write_bytes(b'name: \xff\xfe\xfa\n')
    image = next((camvid_mini / 'val').glob('*.png'))
    data = tmp_path / 'ds'
    shutil.copytree(camvid_mini, data)
    lbl = next((data / 'valannot').glob('*.png'))
    cv2.imwrite(str(lbl), np.zeros((10, 10), np.uint8))
    for name, content in (('ck.safetensors', b'\x10\x00\x00\x00\x00\x00\x00\x00{"a"'),
                          ('ck.pt', b'PK\x03\x04 truncated')):
        (tmp_path / name).write_bytes(content)
    (tmp_path / 'config.yaml').write_text('model: {name: segvit_test, img_size: [64, 96]}\n')
    (tmp_path / 'junk.onnx').write_text('not a model')        # a valid card, no model
    shutil.copy(tiny_model.with_suffix('.card.yaml'), tmp_path / 'junk.card.yaml')
    (tmp_path / 'plan_text.json').write_text('int8 everywhere')
    (tmp_path / 'plan_list.json').write_text('["int8"]')
    return ws(tmp_path, tmp_path / 'm.onnx', image, data, tmp_path / 'bad.onnx', None,
              tmp_path / 'ck.safetensors', tmp_path / 'ck.pt')


CASES = {
    'card not UTF-8': lambda w: ['infer', '--model', w.badcard, '--image', w.image,
                                 '--out', w.root / 'o1.png'],
    'unknown output format': lambda w: ['infer', '--model', w.model, '--image', w.image,
                                        '--out', w.root / 'o2.xyz'],
    'unknown labels format': lambda w: ['infer', '--model', w.model, '--image', w.image,
                                        '--out', w.root / 'o3.png', '--labels', w.root / 'l.xyz'],
    'alpha above 1': lambda w: ['infer', '--model', w.model, '--image', w.image,
                                '--out', w.root / 'o4.png', '--alpha', '5'],
    'alpha below 0': lambda w: ['infer', '--model', w.model, '--image', w.image,
                                '--out', w.root / 'o5.png', '--alpha', '-1'],
    'alpha nan': lambda w: ['infer', '--model', w.model, '--image', w.image,
                            '--out', w.root / 'o6.png', '--alpha', 'nan'],
    'output under a file': lambda w: ['infer', '--model', w.model, '--image', w.image,
                                      '--out', w.image / 'x.png'],
    'label maps of another size': lambda w: ['eval', '--model', w.model, '--data', w.data,
                                             '--split', 'val', '--json', w.root / 'e1.json'],
    'limit 0': lambda w: ['eval', '--model', w.model, '--data', w.data, '--split', 'train',
                          '--limit', '0', '--json', w.root / 'e2.json'],
    'corrupt safetensors': lambda w: ['eval', '--checkpoint', w.ckpt_st, '--data', w.data,
                                      '--split', 'train', '--json', w.root / 'e3.json'],
    'corrupt pt': lambda w: ['eval', '--checkpoint', w.ckpt_pt, '--data', w.data,
                             '--split', 'train', '--json', w.root / 'e4.json'],
    'make-bag rate nan': lambda w: ['make-bag', '--images', w.data / 'train', '--out',
                                    w.root / 'b1', '--rate', 'nan'],
    'make-bag rate inf': lambda w: ['make-bag', '--images', w.data / 'train', '--out',
                                    w.root / 'b2', '--rate', 'inf'],
    'make-bag labels of another size': lambda w: ['make-bag', '--images', w.data / 'val',
                                                  '--labels', w.data / 'valannot',
                                                  '--out', w.root / 'b3'],
    'replay rate nan': lambda w: ['replay', '--bag', w.root / 'nobag', '--rate', 'nan',
                                  '--json', w.root / 'r1.json'],
    'quantize a file that is not ONNX': lambda w: ['quantize', '--model', w.root / 'junk.onnx',
                                                   '--out', w.root / 'q1.onnx'],
    'quantize with a plan that is not JSON': lambda w: [
        'quantize', '--model', w.model, '--plan', w.root / 'plan_text.json',
        '--out', w.root / 'q2.onnx'],
    'quantize with a plan that is not a mapping': lambda w: [
        'quantize', '--model', w.model, '--plan', w.root / 'plan_list.json',
        '--out', w.root / 'q3.onnx'],
    'sensitivity of a file that is not ONNX': lambda w: [
        'sensitivity', '--model', w.root / 'junk.onnx', '--data', w.data,
        '--json', w.root / 's1.json'],
    'regimes of a file that is not ONNX': lambda w: [
        'regimes', '--model', w.root / 'junk.onnx', '--json', w.root / 'g1.json'],
    'eval of a file that is not ONNX': lambda w: [
        'eval', '--model', w.root / 'junk.onnx', '--data', w.data, '--split', 'train',
        '--json', w.root / 'e5.json'],
    're-timing a file that is not benchmark results': lambda w: [
        'bench', '--retime', w.root / 'plan_list.json', '--out', w.root / 'rt'],
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_cli_bad_input_is_one_line_exit_2_and_no_output(case, workspace, capsys):
    argv = [str(a) for a in CASES[case](workspace)]
    before = set(workspace.root.rglob('*'))
    assert main(argv) == 2, case
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('vit-seg ') and 'Traceback' not in err[0], err
    left = {p for p in set(workspace.root.rglob('*')) - before}
    assert not left, f'{case} left {sorted(map(str, left))}'


def test_labels_into_a_new_folder_are_written(workspace):
    out = workspace.root / 'new' / 'deeper' / 'labels.png'
    assert main(['infer', '--model', str(workspace.model), '--image', str(workspace.image),
                 '--out', str(workspace.root / 'c.png'), '--labels', str(out)]) == 0
    labels = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert labels is not None and labels.shape == cv2.imread(str(workspace.image)).shape[:2]


def test_all_ignored_labels_give_valid_json(workspace, tmp_path):
    import json

    data = tmp_path / 'ignored'
    shutil.copytree(workspace.data / 'train', data / 'x')
    (data / 'xannot').mkdir()
    for p in (data / 'x').glob('*.png'):
        h, w = cv2.imread(str(p)).shape[:2]
        cv2.imwrite(str(data / 'xannot' / p.name), np.full((h, w), 11, np.uint8))
    out = tmp_path / 'e.json'
    assert main(['eval', '--model', str(workspace.model), '--data', str(data), '--split', 'x',
                 '--json', str(out)]) == 0
    rep = json.loads(out.read_text())   # strict JSON: no NaN
    assert rep['miou'] is None or math.isfinite(rep['miou'])


def test_a_closed_pipe_ends_the_cli_quietly():
    """`vit-seg models | head -0`: the reader is gone before the first line; no traceback."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, '-m', 'vit_seg_node.cli', 'models'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                      # every write of the child now fails with EPIPE
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == '', err
