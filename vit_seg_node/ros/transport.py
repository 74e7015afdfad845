"""Fast DDS in the node's own process: camera-sized frames from any publisher on this host.

A best-effort Fast DDS writer copies every fragment of a sample into its own process's
shared-memory segment (512 kB unless a profile says otherwise) before any reader has taken
them, so a camera driver with the default settings cannot pass a frame larger than that
(640x480 rgb8: 921 kB) through shared memory: the sample is lost. Over UDP the same fragments
arrive when the *reader's* socket buffer holds them, and that buffer is the reader's setting.

So the node, unless the user configured Fast DDS, starts with a profile of its own before
``rclpy.init`` (Fast DDS 2.x reads ``FASTRTPS_DEFAULT_PROFILES_FILE`` once per process, at the
first participant):

* ``node.xml`` when the kernel allows UDP receive buffers of ``UDP_BUFFER_MIN`` or more
  (``net.core.rmem_max``): readers on UDP with a 16 MB buffer, writers on a 16 MB
  shared-memory segment. Frames of any publisher arrive; every output reaches every subscriber
  on this host.
* ``large_frames.xml`` otherwise: the 16 MB segment for the outputs; frames larger than 512 kB
  then arrive only from publishers that use the same profile (``camera_hint`` says so).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping, Optional

PROFILE_DIR = Path(__file__).resolve().parent.parent / 'data' / 'fastdds'
NODE_PROFILE = PROFILE_DIR / 'node.xml'
CAMERA_PROFILE = PROFILE_DIR / 'large_frames.xml'
PROFILE_VAR = 'FASTRTPS_DEFAULT_PROFILES_FILE'       # what Fast DDS 2.x (Humble, Jazzy) reads
# any of these set: the user configured Fast DDS, and the node leaves it alone
USER_SETTINGS = (PROFILE_VAR, 'FASTDDS_DEFAULT_PROFILES_FILE', 'FASTDDS_BUILTIN_TRANSPORTS')
FASTDDS_RMWS = ('', 'rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp')
CWD_PROFILE = 'DEFAULT_FASTRTPS_PROFILES.xml'         # Fast DDS also loads this one if present
UDP_BUFFER_MIN = 4 << 20
RMEM_MAX = Path('/proc/sys/net/core/rmem_max')


def rmem_max(path: Path = RMEM_MAX) -> Optional[int]:
    """Return the kernel's cap on socket receive buffers in bytes (None where unknown)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def choose_profile(env: MutableMapping[str, str], rmem: Optional[int],
                   cwd: Path = Path('.')) -> Optional[Path]:
    """Return the profile the node's process should use, or None to leave Fast DDS as it is."""
    if env.get('RMW_IMPLEMENTATION', '') not in FASTDDS_RMWS:
        return None
    if any(env.get(v) for v in USER_SETTINGS) or (cwd / CWD_PROFILE).is_file():
        return None
    return NODE_PROFILE if (rmem or 0) >= UDP_BUFFER_MIN else CAMERA_PROFILE


def use_own_profile(env: MutableMapping[str, str] = os.environ) -> Optional[Path]:
    """Set the node's Fast DDS profile in ``env`` (before ``rclpy.init``); return it, or None."""
    profile = choose_profile(env, rmem_max())
    if profile is not None:
        env[PROFILE_VAR] = str(profile)
    return profile


def profile_in_use(env: MutableMapping[str, str] = os.environ) -> Optional[Path]:
    """Return this process's Fast DDS profile file, or None when none is set."""
    value = env.get(PROFILE_VAR) or env.get('FASTDDS_DEFAULT_PROFILES_FILE')
    return Path(value) if value else None


def camera_hint(own: Optional[Path]) -> str:
    """Return the fix for frames that are published but never arrive, for this node's setup."""
    fix = (f'start the camera driver with {PROFILE_VAR}={CAMERA_PROFILE} (a 16 MB shared-memory '
           f'segment; `vit-seg dds-profile` prints the path)')
    if own == CAMERA_PROFILE:
        fix += (f', or allow this node UDP buffers of {UDP_BUFFER_MIN >> 20} MiB: sudo sysctl -w '
                f'net.core.rmem_max={4 * UDP_BUFFER_MIN}')
    elif own != NODE_PROFILE:
        fix += f', and check the Fast DDS profile of this node ({PROFILE_VAR})'
    return ('if it publishes, its frames are lost in transport: Fast DDS loses best-effort frames '
            'larger than the publisher\'s shared-memory segment (512 kB by default: 640x480 '
            'rgb8 is 921 kB); ' + fix + '; or make the image topic reliable on both sides')
