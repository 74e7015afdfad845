"""Serialized frames read in place (ros.cdr): field for field what rclpy's deserializer gives."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from vit_seg_node.ros import cdr
from vit_seg_node.ros.convert import fill_image, FrameError, from_serialized, image_to_rgb, \
    mask_bytes, ros_header


def rclpy_image(img: np.ndarray, encoding: str, frame_id: str, sec: int, nanosec: int) -> Image:
    m = Image()
    fill_image(m, img, encoding, m.header)
    m.header.frame_id = frame_id
    m.header.stamp.sec, m.header.stamp.nanosec = sec, nanosec
    return m


# frame ids and encodings of every length mod 4 move the alignment of every later field
@pytest.mark.parametrize('frame_id, encoding, shape', itertools.product(
    ['', 'c', 'cam', 'cam0', 'camera_x', 'kamera_ä'], ['mono8', 'rgb8', 'bgra8', 'x'],
    [(3, 5), (7, 5, 3), (2, 3, 4)]))
def test_parse_image_equals_rclpy(frame_id, encoding, shape):
    rng = np.random.default_rng(len(frame_id) + len(shape))
    img = rng.integers(0, 256, shape, np.uint8)
    m = rclpy_image(img, encoding, frame_id, -5 if frame_id == 'c' else 1_700_000_000, 123)
    r = cdr.parse_image(serialize_message(m))
    assert (r.header.frame_id, r.header.stamp.sec, r.header.stamp.nanosec) == \
        (frame_id, m.header.stamp.sec, 123)
    assert (r.height, r.width, r.encoding, r.is_bigendian, r.step) == \
        (m.height, m.width, encoding, 0, m.step)
    assert np.array_equal(r.data, np.frombuffer(m.data, np.uint8))
    # and the bytes the node publishes are what rclpy reads back as the same message
    back = deserialize_message(mask_bytes(img if img.ndim == 2 else img[:, :, 0], m.header),
                               Image)
    assert back.header == m.header and back.encoding == 'mono8'
    assert np.array_equal(np.frombuffer(back.data, np.uint8).reshape(back.height, back.width),
                          img if img.ndim == 2 else img[:, :, 0])


def test_parsed_frame_converts_like_the_message():
    img = np.random.default_rng(0).integers(0, 256, (36, 48, 3), np.uint8)
    m = rclpy_image(img, 'bgr8', 'cam', 1, 2)
    assert np.array_equal(image_to_rgb(cdr.parse_image(serialize_message(m))), image_to_rgb(m))


def test_parse_compressed_equals_rclpy():
    for frame_id in ('', 'ab', 'abcde'):
        m = CompressedImage(format='jpeg', data=bytes(range(256)) * 3)
        m.header.frame_id = frame_id
        r = cdr.parse_compressed(serialize_message(m))
        assert (r.header.frame_id, r.format) == (frame_id, 'jpeg')
        assert r.data.tobytes() == bytes(m.data)


def be_image(height: int, width: int, data: bytes) -> bytes:
    """Return a big-endian serialized Image, written field by field (rclpy writes LE)."""
    out = cdr.CDR_BE + b'\0\0' + struct.pack('>iI', 7, 8)
    out += struct.pack('>I', 4) + b'cam\0' + struct.pack('>II', height, width)
    out += struct.pack('>I', 6) + b'mono8\0' + b'\0' * 2     # is_bigendian, pad to 4
    out += struct.pack('>II', width, len(data)) + data
    return out


def test_big_endian_cdr_is_read():
    r = cdr.parse_image(be_image(2, 3, bytes(range(6))))
    assert (r.header.stamp.sec, r.header.stamp.nanosec, r.header.frame_id) == (7, 8, 'cam')
    assert (r.height, r.width, r.encoding, r.step) == (2, 3, 'mono8', 3)
    assert r.data.tobytes() == bytes(range(6))


def test_cut_or_foreign_data_is_refused_then_falls_back():
    m = rclpy_image(np.zeros((4, 4), np.uint8), 'mono8', 'cam', 1, 2)
    buf = serialize_message(m)
    for cut in (buf[:3], buf[:10], buf[:-5]):
        with pytest.raises(cdr.CdrError):
            cdr.parse_image(cut)
        with pytest.raises(FrameError) as exc:
            from_serialized(cut, Image)
        assert exc.value.reason == 'undecodable'
    # another encapsulation (XCDR2's 0x0007) is left to rclpy's deserializer
    with pytest.raises(cdr.CdrError):
        cdr.parse_image(b'\x00\x07' + buf[2:])
    assert isinstance(from_serialized(buf, Image), cdr.RawImage)


def test_ros_header_from_a_parsed_header():
    m = rclpy_image(np.zeros((2, 2), np.uint8), 'mono8', 'front', 3, 4)
    h = ros_header(cdr.parse_image(serialize_message(m)).header)
    assert h == m.header and ros_header(m.header) is m.header
