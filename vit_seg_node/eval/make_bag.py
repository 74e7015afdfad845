"""Write a rosbag2 (mcap or sqlite3) from image files and optional label maps, via ``rosbags``.

Topics: ``/camera/image_raw`` (sensor_msgs/Image rgb8) or ``/camera/image_raw/compressed``
(sensor_msgs/CompressedImage), ``/camera/camera_info`` and ``/camera/semantic_gt`` (mono8).
Frames are written in file-name order (CamVid names sort by sequence and frame number), stamped
``1/rate`` seconds apart.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
import shutil
import tempfile
from typing import Optional

import cv2
import numpy as np

from vit_seg_node.core.errors import UserError

IMAGE_TOPIC = '/camera/image_raw'
INFO_TOPIC = '/camera/camera_info'
GT_TOPIC = '/camera/semantic_gt'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def typestore():
    """Return the rosbags type store for ROS 2 Jazzy messages (same layout as Humble's)."""
    from rosbags.typesys import get_typestore, Stores

    return get_typestore(Stores.ROS2_JAZZY)


def _header(ts, stamp_ns: int, frame_id: str):
    t = ts.types
    sec, nsec = divmod(int(stamp_ns), 10 ** 9)
    return t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec),
                                    frame_id=frame_id)


def image_message(ts, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """Return a rosbags sensor_msgs/Image for an HxW (mono8) or HxWx3 (rgb8) uint8 array."""
    array = np.ascontiguousarray(array, np.uint8)
    return ts.types[IMAGE_TYPE](
        header=_header(ts, stamp_ns, frame_id), height=array.shape[0], width=array.shape[1],
        encoding=encoding, is_bigendian=0, step=array.strides[0], data=array.reshape(-1))


def compressed_message(ts, rgb: np.ndarray, stamp_ns: int, frame_id: str, quality: int = 90):
    """Return a rosbags sensor_msgs/CompressedImage (JPEG) of an RGB frame."""
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UserError('JPEG encoding failed')
    return ts.types[COMPRESSED_TYPE](header=_header(ts, stamp_ns, frame_id), format='jpeg',
                                     data=buf.reshape(-1))


def camera_info_message(ts, h: int, w: int, stamp_ns: int, frame_id: str):
    """Return nominal intrinsics (CamVid ships no calibration: fx = fy = width, centred)."""
    f, cx, cy = float(w), w / 2.0, h / 2.0
    return ts.types[INFO_TYPE](
        header=_header(ts, stamp_ns, frame_id), height=h, width=w, distortion_model='plumb_bob',
        d=np.zeros(5), k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0,
        roi=ts.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def list_frames(images: Path, labels: Optional[Path]) -> list[tuple[Path, Optional[Path]]]:
    """Return (image, label) file pairs in name order; labels matched by file stem."""
    if not images.is_dir():
        raise UserError(f'image directory not found: {images}')
    imgs = sorted(p for p in images.iterdir() if p.suffix.lower() in SUFFIXES)
    if not imgs:
        raise UserError(f'no images in {images}')
    if labels is None:
        return [(p, None) for p in imgs]
    if not labels.is_dir():
        raise UserError(f'label directory not found: {labels}')
    lbl = {p.stem: p for p in labels.iterdir() if p.suffix.lower() in SUFFIXES}
    missing = [p.name for p in imgs if p.stem not in lbl]
    if missing:
        raise UserError(f'{len(missing)} images have no label map (e.g. {missing[:2]})')
    return [(p, lbl[p.stem]) for p in imgs]


def make_bag(images: str | os.PathLike, out: str | os.PathLike,
             labels: Optional[str | os.PathLike] = None, storage: str = 'mcap',
             rate: float = 1.0, compressed: bool = False, frame_id: str = 'camera',
             limit: Optional[int] = None, start_ns: int = 1_700_000_000 * 10 ** 9,
             compress_storage: bool = True, overwrite: bool = False) -> dict:
    """Write the bag (complete, or not at all); return a summary (frames, topics, path)."""
    if storage not in ('mcap', 'sqlite3'):
        raise UserError(f'storage must be mcap or sqlite3, got {storage!r}')
    if not (math.isfinite(rate) and rate > 0):
        raise UserError(f'rate must be a positive number, got {rate}')
    if limit is not None and limit < 1:
        raise UserError(f'limit must be at least 1, got {limit}')
    frames = list_frames(Path(images), Path(labels) if labels else None)[:limit]
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f'{out} exists (rosbag2 writes a new directory)')
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
    except OSError as exc:
        raise UserError(f'cannot write {out}: {exc.strerror or exc}') from None
    try:   # written beside the target, moved into place only when complete
        summary = _write(frames, work / out.name, storage, rate, compressed, frame_id, start_ns,
                         compress_storage, bool(labels))
        if out.exists():
            shutil.rmtree(out)
        os.replace(work / out.name, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**summary, 'bag': str(out)}


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f'cannot decode {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_label(path: Path, shape: tuple[int, int]) -> np.ndarray:
    lbl = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise UserError(f'cannot decode {path}')
    lbl = lbl[:, :, 0] if lbl.ndim == 3 else lbl
    if lbl.shape != shape:
        raise UserError(f'label map {path} is {lbl.shape[1]}x{lbl.shape[0]}, its image '
                        f'{shape[1]}x{shape[0]}')
    return lbl.astype(np.uint8)


def _write(frames: list, out: Path, storage: str, rate: float, compressed: bool, frame_id: str,
           start_ns: int, compress_storage: bool, with_labels: bool) -> dict:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

    ts = typestore()
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    writer = Writer(out, version=8, storage_plugin=plugin)
    if compress_storage and storage == 'mcap':
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        topic = IMAGE_TOPIC + ('/compressed' if compressed else '')
        c_img = writer.add_connection(topic, COMPRESSED_TYPE if compressed else IMAGE_TYPE,
                                      typestore=ts)
        c_info = writer.add_connection(INFO_TOPIC, INFO_TYPE, typestore=ts)
        c_gt = writer.add_connection(GT_TOPIC, IMAGE_TYPE, typestore=ts) if with_labels else None
        for i, (img_path, lbl_path) in enumerate(frames):
            stamp = start_ns + int(round(i * 1e9 / rate))
            rgb = _read_rgb(img_path)
            msg = (compressed_message(ts, rgb, stamp, frame_id) if compressed else
                   image_message(ts, rgb, 'rgb8', stamp, frame_id))
            writer.write(c_img, stamp, ts.serialize_cdr(msg, c_img.msgtype))
            info = camera_info_message(ts, rgb.shape[0], rgb.shape[1], stamp, frame_id)
            writer.write(c_info, stamp, ts.serialize_cdr(info, INFO_TYPE))
            if c_gt is not None:
                gt = image_message(ts, _read_label(lbl_path, rgb.shape[:2]), 'mono8', stamp,
                                   frame_id)
                writer.write(c_gt, stamp, ts.serialize_cdr(gt, IMAGE_TYPE))
    return {'frames': len(frames), 'image_topic': topic,
            'gt_topic': GT_TOPIC if with_labels else None, 'storage': storage}
