"""Image dimensions from the encoded header (JPEG, PNG), read before anything is decoded.

A few hundred bytes can declare a 20000 x 20000 image; decoding it allocates gigabytes. Reading
the header first lets the caller refuse such an image at the cost of a few byte comparisons.
"""

from __future__ import annotations

import struct
from typing import Optional

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
DEFAULT_MAX_PIXELS = 4096 * 4096   # what the node and `vit-seg infer` accept by default
# JPEG start-of-frame markers (baseline, progressive, lossless...): all 0xC0-0xCF except DHT
# (0xC4), JPG (0xC8) and DAC (0xCC)
_SOF = {m for m in range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))   # TEM, RSTn: no length field


def encoded_format(data: bytes) -> Optional[str]:
    """Return 'jpeg' or 'png' from the magic bytes, or None."""
    if data[:2] == b'\xff\xd8':
        return 'jpeg'
    if data[:8] == PNG_SIGNATURE:
        return 'png'
    return None


def encoded_size(data: bytes) -> Optional[tuple[int, int]]:
    """Return ``(width, height)`` declared by a JPEG or PNG header, or None if unreadable."""
    fmt = encoded_format(data)
    if fmt == 'png':
        if len(data) < 24 or data[12:16] != b'IHDR':
            return None
        w, h = struct.unpack('>II', data[16:24])
        return w, h
    if fmt == 'jpeg':
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:            # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):    # end of image, start of scan: no frame header before it
            return None
        length = struct.unpack('>H', data[i + 2:i + 4])[0]
        if marker in _SOF:
            if i + 9 > n or length < 7:
                return None
            h, w = struct.unpack('>HH', data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None
