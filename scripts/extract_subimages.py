"""Cut large training images into overlapping sub-images, as the field prepares DF2K.

Decoding a 2K PNG for every 64x64 patch wastes most of the data loader's time, so BasicSR's
``scripts/data_preparation/extract_subimages.py`` cuts DF2K once into 480x480 HR crops with step 240
(and the matching LR crops: x2 240/120, x3 160/80, x4 120/60). This script follows the same rule:

* positions ``0, step, 2*step, ...`` while the crop fits, plus a last crop flush with the border when
  more than ``thresh_size`` pixels would otherwise be left over (threshold 0: always);
* crops are numbered row-major from 1 and saved as ``{name}_s{index:03d}.png`` (PNG, compression 3);
  a trailing ``x{2,3,4,8}`` scale suffix is removed from LR names so LR and HR sub-images share names.

Differences from BasicSR: output is always PNG (a JPEG input is not re-compressed) and only a trailing
scale suffix is removed (BasicSR removes 'x2' anywhere in the name).

    python scripts/extract_subimages.py --input DIR --output DIR --crop_size 480 --step 240
    python scripts/extract_subimages.py --df2k /data/DF2K          # all of the below:
        DF2K_HR -> DF2K_HR_sub (480/240);  DF2K_LR_bicubic/X{s} -> DF2K_bicx{s}_sub (480/s, 240/s)

``--df2k`` first checks that every LR image is exactly 1/s of its HR image, since otherwise the last
row/column of LR and HR sub-images would be cut at different places.
"""
import argparse
import functools
import multiprocessing
import os
import re
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from iln_jax.data import images, sources  # noqa: E402

DF2K_HR_CROP, DF2K_HR_STEP = 480, 240
_SCALE_SUFFIX = re.compile(r"x[2348]$")


def crop_positions(length: int, crop_size: int, step: int, thresh_size: int) -> np.ndarray:
    """Start offsets along one axis (BasicSR's rule)."""
    if length < crop_size:
        return np.zeros(0, dtype=np.int64)
    positions = np.arange(0, length - crop_size + 1, step)
    if length - (positions[-1] + crop_size) > thresh_size:
        positions = np.append(positions, length - crop_size)
    return positions


def extract_image(path: str, output: str, crop_size: int, step: int, thresh_size: int) -> int:
    """Write the sub-images of one image; returns how many were written."""
    name = _SCALE_SUFFIX.sub("", os.path.splitext(os.path.basename(path))[0])
    with Image.open(path) as img:
        img.load()
        width, height = img.size
        index = 0
        for top in crop_positions(height, crop_size, step, thresh_size):
            for left in crop_positions(width, crop_size, step, thresh_size):
                index += 1
                box = (int(left), int(top), int(left) + crop_size, int(top) + crop_size)
                img.crop(box).save(os.path.join(output, f"{name}_s{index:03d}.png"), compress_level=3)
    return index


def extract_folder(input_dir: str, output_dir: str, crop_size: int, step: int, thresh_size: int, workers: int) -> int:
    """Extract every image of ``input_dir`` into the new folder ``output_dir``; returns the crop count."""
    files = images.list_images(input_dir)
    if not files:
        raise SystemExit(f"no images in {input_dir}")
    if os.path.exists(output_dir):
        raise SystemExit(f"{output_dir} already exists; remove it or choose another output folder")
    os.makedirs(output_dir)
    job = functools.partial(extract_image, output=output_dir, crop_size=crop_size, step=step, thresh_size=thresh_size)
    if workers == 1:
        count = sum(map(job, files))
    else:
        with multiprocessing.Pool(workers) as pool:
            count = sum(pool.imap_unordered(job, files, chunksize=4))
    print(f"{input_dir}: {len(files)} images -> {count} sub-images of {crop_size}x{crop_size} in {output_dir}")
    return count


def extract_df2k(root: str, scales: list[int], thresh_size: int, workers: int) -> None:
    """DF2K_HR and DF2K_LR_bicubic/X{s} -> DF2K_HR_sub and DF2K_bicx{s}_sub."""
    hr_dir = os.path.join(root, "DF2K_HR")
    lr_dirs = {s: os.path.join(root, "DF2K_LR_bicubic", f"X{s}") for s in scales}
    hr_files = sources.image_files(hr_dir, "sr")
    for scale, lr_dir in lr_dirs.items():
        if not os.path.isdir(lr_dir):
            raise SystemExit(f"{lr_dir} does not exist (drop scale {scale} with --scales)")
        for hr, lr in zip(hr_files, sources.pair_files(hr_files, sources.image_files(lr_dir, "sr"), scale)):
            (h, w), (lr_h, lr_w) = _size(hr), _size(lr)
            if (h, w) != (lr_h * scale, lr_w * scale):
                raise SystemExit(f"{hr} is {h}x{w} but {lr} is {lr_h}x{lr_w}; HR must be exactly {scale}x LR")
    extract_folder(hr_dir, os.path.join(root, "DF2K_HR_sub"), DF2K_HR_CROP, DF2K_HR_STEP, thresh_size, workers)
    for scale, lr_dir in lr_dirs.items():
        extract_folder(lr_dir, os.path.join(root, f"DF2K_bicx{scale}_sub"), DF2K_HR_CROP // scale,
                       DF2K_HR_STEP // scale, thresh_size // scale, workers)


def _size(path: str) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size[1], img.size[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="folder of images to cut")
    parser.add_argument("--output", help="new folder for the sub-images")
    parser.add_argument("--crop_size", type=int, default=DF2K_HR_CROP)
    parser.add_argument("--step", type=int, default=DF2K_HR_STEP)
    parser.add_argument("--thresh_size", type=int, default=0)
    parser.add_argument("--df2k", help="DF2K root holding DF2K_HR and DF2K_LR_bicubic/X{s}")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="LR scales for --df2k")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.df2k:
        extract_df2k(args.df2k, args.scales, args.thresh_size, args.workers)
    elif args.input and args.output:
        extract_folder(args.input, args.output, args.crop_size, args.step, args.thresh_size, args.workers)
    else:
        parser.error("give --input and --output, or --df2k")


if __name__ == "__main__":
    main()
