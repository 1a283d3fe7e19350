"""Training and evaluation data: the field's data sets, degradations and a deterministic grain pipeline.

Entry points (config fields are documented in ``config.py``)::

    config = default_config()                      # SR x2 on the embedded photos
    train = make_train_dataset(config, seed=0)     # grain IterDataset of {"lq", "gt"} batches
    evaluation = make_eval_set(config)             # [{"name", "lq", "gt"}] full images

One file per job: ``imresize.py`` (MATLAB bicubic), ``images.py`` (decoding, channels),
``degradations.py``, ``transforms.py`` (crops, flips/rot90), ``sources.py`` (folders, TFDS records),
``embedded.py`` (scikit-image photos), ``tfds_builders.py`` / ``prepare_tfds.py`` (``df2k``,
``rain13k``), ``patches.py`` (one sample), ``pipeline.py`` (grain graph), ``skip_report.py``,
``eval_set.py``.
"""
from iln_jax.data.config import default_config
from iln_jax.data.eval_set import make_eval_set
from iln_jax.data.images import BadImageError
from iln_jax.data.imresize import imresize, modcrop
from iln_jax.data.pipeline import make_train_dataset

__all__ = ["BadImageError", "default_config", "imresize", "make_eval_set", "make_train_dataset", "modcrop"]
