"""Official checkpoints by name: download (resumable, verified), convert once, cache as Orbax.

    from iln_jax.pretrained import load_pretrained
    loaded = load_pretrained("swinir-classical-x2")        # LoadedModel: module, variables, task settings
    out = Restorer(loaded.module, loaded.variables).restore(lq)

    python -m iln_jax.pretrained list                      # names, tasks, where each file comes from
    python3 eval.py --pretrained swinir-classical-x2 --data-root ~/testsets --datasets Set5

The cache (``--cache-dir``, ``$ILN_JAX_CACHE``, default ``~/.cache/iln_jax``) holds
``downloads/<official file>`` (put hand-downloaded files there), ``converted/<name>/`` (Orbax, in
the training-run layout) and ``registry.json`` (local records: verified sizes/sha256, mirrors,
extra models). See ``entry`` for the entry fields and ``zoo`` for the facts behind them.
"""
from iln_jax.pretrained.entry import Pretrained
from iln_jax.pretrained.errors import DownloadError, NotDownloadableError, PretrainedError, VerificationError
from iln_jax.pretrained.load import fetch, load_pretrained
from iln_jax.pretrained.registry import CACHE_ENV, cache_dir, converted_path, download_path, entries, get, names, record
from iln_jax.pretrained.transfer import download, sha256_of, verify

__all__ = ["CACHE_ENV", "DownloadError", "NotDownloadableError", "Pretrained", "PretrainedError",
           "VerificationError", "cache_dir", "converted_path", "download", "download_path", "entries", "fetch",
           "get", "load_pretrained", "names", "record", "sha256_of", "verify"]
