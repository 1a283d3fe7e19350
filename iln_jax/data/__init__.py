"""Training and evaluation data: MATLAB-style resizing and the data pipelines."""
from iln_jax.data.imresize import imresize, modcrop

__all__ = ["imresize", "modcrop"]
