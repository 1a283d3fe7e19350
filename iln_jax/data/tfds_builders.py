"""TFDS builders ``df2k`` and ``rain13k``: local folders (``manual_dir``) -> ArrayRecord -> grain.

Neither data set can be downloaded by TFDS (the catalog's ``div2k`` downloads DIV2K only, and there is
no Rain13K builder), so both builders read the folders the field already keeps on disk and prepare
them once into ArrayRecord files, which ``tfds.data_source`` / ``builder.as_data_source`` read with
random access and no TensorFlow (``as_dataset`` would need TF; do not use it).

Records store each image file's **original bytes** (PNG stays PNG, JPEG is not re-encoded), so the
prepared data is bit-identical to the folders, preparing costs a copy rather than a re-encode, and
decoding, channel conversion and bad-file handling are the same code as for folders. Preparing
checks every pairing and every image header (LR/HR sizes); a corrupt pixel stream is only found when
the image is decoded in training (error or skip, as configured).

``df2k`` configs: ``x2``, ``x3``, ``x4`` (HR + pre-made LR) and ``hr`` (HR only; LR, noise or JPEG are
made on the fly). Features: ``name`` (file stem), ``hr`` and ``lr`` (encoded bytes). ``rain13k``
features: ``name``, ``target`` (clean) and ``input`` (rainy).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from iln_jax.data import images, sources
from iln_jax.errors import DataNotFoundError

# (HR folder, LR folder) alternatives, tried in this order; all pairs of the first layout whose HR
# folders exist are used (DIV2K and Flickr2K together make DF2K).
DF2K_LAYOUTS = (
    (("DF2K_HR_sub", "DF2K_bicx{scale}_sub"),),
    (("DF2K_HR", "DF2K_LR_bicubic/X{scale}"),),
    (("DIV2K_train_HR", "DIV2K_train_LR_bicubic/X{scale}"), ("Flickr2K_HR", "Flickr2K_LR_bicubic/X{scale}")),
)
RAIN13K_LAYOUTS = ("", "Rain13K", "train/Rain13K")

DF2K_INSTRUCTIONS = """\
manual_dir must hold DF2K in one of these layouts (the first one found is used; {s} = 2, 3, 4):
  1. sub-images (BasicSR extract_subimages.py / scripts/extract_subimages.py --df2k):
       DF2K_HR_sub/0001_s001.png ...   DF2K_bicx{s}_sub/0001_s001.png ...
  2. merged full images:
       DF2K_HR/0001.png ...            DF2K_LR_bicubic/X{s}/0001x{s}.png ...
  3. the original archives, either or both:
       DIV2K_train_HR/0001.png ...     DIV2K_train_LR_bicubic/X{s}/0001x{s}.png ...
       Flickr2K_HR/000001.png ...      Flickr2K_LR_bicubic/X{s}/000001x{s}.png ...
LR files may be named like the HR files or carry the x{s} suffix. The 'hr' config needs only the HR folders.
"""
RAIN13K_INSTRUCTIONS = """\
manual_dir must hold Rain13K as Restormer ships it: input/ (rainy) and target/ (clean) folders of
equally named images, either directly in manual_dir, in manual_dir/Rain13K/ or in manual_dir/train/Rain13K/.
"""


def _encoded_image() -> tfds.features.Tensor:
    """A scalar bytes feature (decodes to ``bytes`` without TensorFlow)."""
    return tfds.features.Tensor(shape=(), dtype=np.object_)


class _FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders here: pins ``code_path``, which TFDS 4.9.10 cannot compute for them.

    For a builder defined inside a package, TFDS's ``code_path`` checks an ``importlib_resources``
    type, a backport it only installs on Python < 3.9, so preparing fails with
    ``ModuleNotFoundError: importlib_resources``. The builders live in this file.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)


@dataclasses.dataclass(eq=False)
class Df2kConfig(tfds.core.BuilderConfig):
    """``scale`` selects the pre-made LR folder; None stores HR only."""

    scale: Optional[int] = None


class Df2k(_FolderBuilder):
    """DF2K (DIV2K 800 + Flickr2K 2650 training images) for SR, denoising and JPEG training."""

    name = "df2k"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Original file bytes of the HR (and LR) images from local folders."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = DF2K_INSTRUCTIONS
    BUILDER_CONFIGS = [Df2kConfig(name=f"x{s}", scale=s, description=f"HR + MATLAB-bicubic LR x{s}")
                       for s in (2, 3, 4)] + [Df2kConfig(name="hr", description="HR only")]

    def _info(self) -> tfds.core.DatasetInfo:
        features = {"name": tfds.features.Text(), "hr": _encoded_image()}
        if self.builder_config.scale is not None:
            features["lr"] = _encoded_image()
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
            homepage="https://data.vision.ee.ethz.ch/cvl/DIV2K/")

    def _split_generators(self, dl_manager):
        folders = _df2k_folders(os.fspath(dl_manager.manual_dir), self.builder_config.scale)
        return {"train": self._generate_examples(folders)}

    def _generate_examples(self, folders):
        scale = self.builder_config.scale
        for hr_dir, lr_dir in folders:
            for name, hr, lr in _checked_files(hr_dir, lr_dir, scale or 1, "sr"):
                record = {"name": name, "hr": _read_bytes(hr)}
                if lr is not None:
                    record["lr"] = _read_bytes(lr)
                yield f"{os.path.basename(hr_dir)}/{name}", record


class Rain13k(_FolderBuilder):
    """Rain13K (Restormer's merged deraining training set, 13,712 pairs)."""

    name = "rain13k"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Original file bytes of the rainy/clean pairs from local folders."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = RAIN13K_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        features = {"name": tfds.features.Text(), "target": _encoded_image(), "input": _encoded_image()}
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
            homepage="https://github.com/swz30/Restormer")

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        for layout in RAIN13K_LAYOUTS:
            target, rainy = os.path.join(root, layout, "target"), os.path.join(root, layout, "input")
            if os.path.isdir(target) and os.path.isdir(rainy):
                return {"train": self._generate_examples(target, rainy)}
        raise DataNotFoundError(f"no Rain13K input/ + target/ folders in {root}. {RAIN13K_INSTRUCTIONS}")

    def _generate_examples(self, target_dir, input_dir):
        for name, target, rainy in _checked_files(target_dir, input_dir, 1, "dr"):
            yield name, {"name": name, "target": _read_bytes(target), "input": _read_bytes(rainy)}


# Which features hold the target and the input, per builder.
FEATURE_KEYS = {Df2k.name: ("hr", "lr"), Rain13k.name: ("target", "input")}


def open_source(name: str, data_dir: str, *, manual_dir: Optional[str], channels: int, gray: str,
                split: str = "train") -> sources.TfdsSource:
    """A :class:`sources.TfdsSource` for ``name`` (e.g. "df2k/x4"), preparing it first if needed.

    Preparing happens only when ``manual_dir`` is given; otherwise an unprepared data set is an error
    that says how to prepare it (on multi-host jobs, prepare once beforehand).
    """
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if manual_dir is None:
            raise DataNotFoundError(
                f"TFDS data set {name} is not prepared in {data_dir}. Prepare it once with "
                f"`python -m iln_jax.data.prepare_tfds {name} --manual_dir DIR --data_dir {data_dir}` "
                f"(or set the data config's root to DIR). {builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        prepare(builder, manual_dir)
    gt_key, lq_key = FEATURE_KEYS[builder.name]
    scale = getattr(builder.builder_config, "scale", 1)  # rain13k has no config: pairs at scale 1
    if scale is None:  # df2k/hr
        lq_key, scale = None, 1
    return sources.TfdsSource(builder.as_data_source(split=split), f"{name}[{split}]", gt_key=gt_key,
                              lq_key=lq_key, scale=scale, channels=channels, gray=gray)


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
    """Write the ArrayRecord files of ``builder`` from the folders in ``manual_dir``."""
    if not epath.Path(manual_dir).is_dir():
        raise DataNotFoundError(f"manual_dir {manual_dir} does not exist. {builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def _df2k_folders(root: str, scale: Optional[int]) -> list[tuple[str, Optional[str]]]:
    for layout in DF2K_LAYOUTS:
        found = [(os.path.join(root, hr), os.path.join(root, lr.format(scale=scale)))
                 for hr, lr in layout if os.path.isdir(os.path.join(root, hr))]
        if not found:
            continue
        if scale is None:
            return [(hr, None) for hr, _ in found]
        missing = [lr for _, lr in found if not os.path.isdir(lr)]
        if missing:
            raise DataNotFoundError(
                f"found the DF2K HR folder(s) {[hr for hr, _ in found]} but not the x{scale} LR folder(s) "
                f"{missing}; make them (MATLAB bicubic) or prepare df2k/hr and make LR on the fly. {DF2K_INSTRUCTIONS}")
        return found
    present = sorted(e.name for e in os.scandir(root)) if os.path.isdir(root) else []
    raise DataNotFoundError(f"no DF2K folders in {root} (it contains {present}). {DF2K_INSTRUCTIONS}")


def _checked_files(gt_dir: str, lq_dir: Optional[str], scale: int, task: str
                   ) -> Iterator[tuple[str, str, Optional[str]]]:
    """(name, target path, input path) with pairing and header sizes checked."""
    gt_files = sources.image_files(gt_dir, task)
    lq_files: Sequence[Optional[str]] = [None] * len(gt_files)
    if lq_dir is not None:
        lq_files = sources.pair_files(gt_files, sources.image_files(lq_dir, task), scale)
    for gt, lq in zip(gt_files, lq_files):
        gt_size = _header_size(gt)
        if lq is not None:
            sources.check_pair_sizes(gt_size, _header_size(lq), scale, gt, lq)
        yield os.path.splitext(os.path.basename(gt))[0], gt, lq


def _header_size(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError) as e:
        raise images.BadImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return height, width


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
