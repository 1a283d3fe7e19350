"""Import the official PyTorch architectures from a user's checkouts, without their frameworks.

The golden generator (``scripts/make_goldens.py``) runs the official modules themselves; this file
only makes their imports resolve when BasicSR, timm and scikit-learn are not installed. What it puts
in ``sys.modules`` never touches the numerics of a forward or backward pass:

* ``basicsr.utils.registry``: the ``ARCH_REGISTRY`` / ``MODEL_REGISTRY`` decorators (return the class).
* ``basicsr.archs.arch_util`` and ``timm.models.layers``: ``to_2tuple``, ``trunc_normal_`` (an
  initializer; every parameter is overwritten by the recipe) and ``DropPath`` (identity in eval
  mode, where the goldens run; it refuses to run in training mode rather than differ).
* ``basicsr.models.sr_model.SRModel`` (base class of HAT/DRCT's model wrappers: their
  ``pre_process``/``post_process``, the test-time padding, are plain methods that read ``opt`` and
  ``lq``), ``basicsr.metrics`` and ``basicsr.utils``: names the wrappers import but the padding
  methods never call.
* ``sklearn.*``: HINT_arch imports four names it never uses.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import pathlib
import subprocess
import sys
import types

import torch

# The official file of each architecture inside its repository.
ARCH_FILES = {
    "swinir": "models/network_swinir.py",
    "hat": "hat/archs/hat_arch.py",
    "drct": "drct/archs/DRCT_arch.py",
    "restormer": "basicsr/models/archs/restormer_arch.py",
    "hint": "basicsr/models/archs/HINT_arch.py",
}
# The test-time wrappers whose padding the odd-size goldens go through.
MODEL_FILES = {"hat": "hat/models/hat_model.py", "drct": "drct/models/drct_model.py"}
REPOS = {"swinir": "JingyunLiang/SwinIR", "hat": "XPixelGroup/HAT", "drct": "ming053l/DRCT",
         "restormer": "swz30/Restormer", "hint": "joshyZhou/HINT"}


class _Registry:
    def register(self, *args, **kwargs):
        return lambda cls: cls


class _DropPathEvalOnly(torch.nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.training and self.drop_prob > 0:
            raise RuntimeError("the golden recipe runs in eval mode; this DropPath stand-in has no training path")
        return x


def _to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def _unused(*args, **kwargs):
    raise RuntimeError("an official module called a name that the golden generator stubs as unused")


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch._dynamo looks modules up by spec
    module.__dict__.update(attrs)
    return module


def install_stubs() -> None:
    """Make the official files' framework imports resolve (idempotent)."""
    helpers = dict(to_2tuple=_to_2tuple, trunc_normal_=torch.nn.init.trunc_normal_, DropPath=_DropPathEvalOnly)
    stubs = {
        "basicsr": {}, "basicsr.utils": dict(imwrite=_unused, tensor2img=_unused),
        "basicsr.utils.registry": dict(ARCH_REGISTRY=_Registry(), MODEL_REGISTRY=_Registry()),
        "basicsr.archs": {}, "basicsr.archs.arch_util": helpers,
        "basicsr.models": {}, "basicsr.models.sr_model": dict(SRModel=object),
        "basicsr.metrics": dict(calculate_metric=_unused),
        "timm": {}, "timm.models": {}, "timm.models.layers": helpers,
        "sklearn": {}, "sklearn.cluster": dict(KMeans=_unused, SpectralClustering=_unused),
        "sklearn.metrics": {}, "sklearn.metrics.pairwise": dict(cosine_similarity=_unused),
        "sklearn.impute": dict(SimpleImputer=_unused),
    }
    for name, attrs in stubs.items():
        sys.modules.setdefault(name, _module(name, **attrs))  # a module imported before stays as it is


def _load_file(path: pathlib.Path, module_name: str) -> types.ModuleType:
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: pass the root of the official checkout")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_arch(arch: str, checkout: pathlib.Path) -> types.ModuleType:
    install_stubs()
    return _load_file(pathlib.Path(checkout) / ARCH_FILES[arch], f"official_{arch}_arch")


def load_model_wrapper(arch: str, checkout: pathlib.Path) -> types.ModuleType:
    install_stubs()
    return _load_file(pathlib.Path(checkout) / MODEL_FILES[arch], f"official_{arch}_model")


def commit_of(checkout: pathlib.Path) -> str:
    """The checkout's git commit, or 'unknown' (an exported tree has no .git: pass PATH@COMMIT)."""
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
