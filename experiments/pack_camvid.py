"""Pack CamVid small enough to travel to a lent GPU machine (its working-tree limit is 64 MiB).

python experiments/pack_camvid.py --data ../shared/datasets/camvid --out .camvid

Frames become JPEG (quality 95), label maps stay PNG (lossless), in the same SegNet layout, so
every split name (`fit`, `heldout`, `all`...) works on the copy. `.camvid/` is git-ignored and
travels with `carry: ['.camvid']`. Training on JPEG copies is a (small) distribution shift:
validation figures of record are re-measured on the original PNGs here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import sys

import cv2


def main(argv=None) -> int:
    """Copy frames as JPEG and label maps as they are."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', required=True)
    ap.add_argument('--out', default='.camvid')
    ap.add_argument('--quality', type=int, default=95)
    a = ap.parse_args(argv)
    src, out = Path(a.data), Path(a.out)
    for split in ('train', 'val'):
        (out / split).mkdir(parents=True, exist_ok=True)
        shutil.copytree(src / f'{split}annot', out / f'{split}annot', dirs_exist_ok=True)
        for p in sorted((src / split).glob('*.png')):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            cv2.imwrite(str(out / split / f'{p.stem}.jpg'), img,
                        [cv2.IMWRITE_JPEG_QUALITY, a.quality])
    size = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
    print(f'{out}: {size / 2 ** 20:.1f} MiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
