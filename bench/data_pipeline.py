"""Throughput of the training input pipeline: patches/s per host and per worker process.

Cases (the paper's training inputs):
  sr_x4_premade   SR x4, 64x64 LR / 256x256 HR patches, DF2K-style 480x480 HR sub-images + pre-made LR
  sr_x4_on_the_fly  the same with LR made on the fly (MATLAB bicubic of the HR window)
  derain_128      deraining, 128x128 patches from Rain13K-style 384x512 input/target pairs

The images are written to a temporary folder first: crops of the embedded photos (real content, so
PNG decoding costs what it costs on DF2K), LR made with imresize, rain with the synthetic streaks.
"per worker" divides the host rate by the worker count (0 workers = decoding in the calling
process's threads, counted as one). Startup (worker spawn + first batch) is reported separately.
"CPU ms/patch" is the CPU time of making one patch in this process: unlike the rates it does not
depend on other load on the machine, and 1000 / it is what one fully used core can deliver.

    python bench/data_pipeline.py                       # workers 0, 1, ..., cpu_count
    python bench/data_pipeline.py --workers 0 4 8 --batches 100 --out results.json
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from iln_jax.data import default_config, degradations, embedded, make_train_dataset, patches, pipeline  # noqa: E402
from iln_jax.data.imresize import imresize  # noqa: E402

SUB_IMAGE, RAIN_SHAPE = 480, (384, 512)


def write_data(root: str, count: int) -> None:
    """DF2K-like sub-images (HR + X4) and Rain13K-like pairs cut from the embedded training photos."""
    rng = np.random.default_rng(0)
    photos = [embedded.photo(name) for name in embedded.TRAIN_PHOTOS]
    for sub in ("HR", "X4", "rain/input", "rain/target"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        hr = _random_crop(photo, (SUB_IMAGE, SUB_IMAGE), rng)
        Image.fromarray(hr).save(os.path.join(root, "HR", f"{i:04d}_s001.png"))
        Image.fromarray(imresize(hr, 1 / 4)).save(os.path.join(root, "X4", f"{i:04d}_s001.png"))
        clean = _random_crop(photo, RAIN_SHAPE, rng)
        rainy = np.round(degradations.synthetic_rain(clean, rng) * 255).astype(np.uint8)
        Image.fromarray(clean).save(os.path.join(root, "rain", "target", f"{i}.png"))
        Image.fromarray(rainy).save(os.path.join(root, "rain", "input", f"{i}.png"))


def _random_crop(photo: np.ndarray, shape, rng) -> np.ndarray:
    """A crop of ``shape``; photos smaller than that are upscaled first."""
    factor = max(shape[0] / photo.shape[0], shape[1] / photo.shape[1], 1.0)
    if factor > 1:
        photo = imresize(photo, factor)
    top = rng.integers(0, photo.shape[0] - shape[0] + 1)
    left = rng.integers(0, photo.shape[1] - shape[1] + 1)
    return np.ascontiguousarray(photo[top:top + shape[0], left:left + shape[1]])


def cases(root: str) -> dict:
    sr = dict(task="sr", scale=4, patch_size=64, source="folder", root=os.path.join(root, "HR"))
    return {
        "sr_x4_premade": dict(sr, lr_root=os.path.join(root, "X4")),
        "sr_x4_on_the_fly": sr,
        "derain_128": dict(task="dr", patch_size=128, source="folder", root=os.path.join(root, "rain")),
    }


def _config(overrides: dict):
    config = default_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def cpu_ms_per_patch(overrides: dict, count: int = 64) -> float:
    """CPU time of one patch (decode, crop, augment, degrade), made in this process."""
    config = _config(overrides)
    degradation = degradations.Degradation.from_config(config)
    source = pipeline.open_train_source(config, degradation, allow_prepare=True)
    sampler = patches.PatchSampler(source, degradation, config.patch_size, augment=True, skip_bad_images=False)
    sampler.random_map(0, np.random.default_rng(0))
    start = time.process_time()
    for i in range(count):
        sampler.random_map(i, np.random.default_rng(i))
    return (time.process_time() - start) / count * 1e3


def measure(overrides: dict, workers: int, batch_size: int, read_threads: int, warmup: int, batches: int) -> dict:
    config = _config(overrides)
    config.batch_size, config.num_workers, config.read_threads = batch_size, workers, read_threads
    start = time.perf_counter()
    iterator = iter(make_train_dataset(config, seed=0, process_index=0, process_count=1))
    next(iterator)
    startup = time.perf_counter() - start
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    iterator.close()
    per_host = batches * batch_size / elapsed
    return {"workers": workers, "patches_per_s_host": per_host,
            "patches_per_s_worker": per_host / max(workers, 1), "startup_s": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=list(range(os.cpu_count() + 1)))
    parser.add_argument("--batch_size", type=int, default=32, help="per-host batch")
    parser.add_argument("--read_threads", type=int, default=default_config().read_threads)
    parser.add_argument("--images", type=int, default=24, help="images written per data set")
    parser.add_argument("--warmup", type=int, default=10, help="batches skipped after the first")
    parser.add_argument("--batches", type=int, default=40, help="batches timed")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "data_pipeline.json"))
    args = parser.parse_args()

    results, cpu = [], {}
    with tempfile.TemporaryDirectory() as root:
        write_data(root, args.images)
        for name, overrides in cases(root).items():
            cpu[name] = cpu_ms_per_patch(overrides)
            print(f"{name:<18} CPU {cpu[name]:.1f} ms/patch -> {1000 / cpu[name]:.0f} patches/s per fully used core")
        print(f"{'case':<18} {'workers':>7} {'patches/s host':>15} {'patches/s worker':>17} {'startup s':>10}")
        for name, overrides in cases(root).items():
            for workers in args.workers:
                row = dict(case=name, **measure(overrides, workers, args.batch_size, args.read_threads,
                                                args.warmup, args.batches))
                results.append(row)
                print(f"{name:<18} {workers:>7} {row['patches_per_s_host']:>15.0f} "
                      f"{row['patches_per_s_worker']:>17.0f} {row['startup_s']:>10.2f}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"host": platform.node(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                   "batch_size": args.batch_size, "read_threads": args.read_threads,
                   "cpu_ms_per_patch": cpu, "results": results}, f, indent=2)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
