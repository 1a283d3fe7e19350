"""Importing the official PyTorch model files from a user's checkout, as they are.

The official files import a few things only for training conveniences: ``timm.models.layers``
(``DropPath``, ``to_2tuple``, ``trunc_normal_``) and BasicSR's registry (HAT, DRCT, i-LN). Where
those packages are missing (BasicSR needs torchvision < 0.17, BasicSR #533), minimal stand-ins are
put in ``sys.modules`` so the model classes import; they implement the same functions (drop-path
draws a per-sample Bernoulli mask, scaled by 1 / keep), and a registry that accepts every
registration. ``installed_stand_ins()`` says which were used.

The official i-LN model subclasses its sibling file (``from basicsr.archs import hat_arch``):
:func:`load_file` loads such siblings from the same folder under the names the file imports.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

_STAND_INS: list[str] = []


def installed_stand_ins() -> list[str]:
    return list(_STAND_INS)


def _module(name: str, **attrs) -> types.ModuleType:
    mod = sys.modules.get(name) or types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    sys.modules[name] = mod
    return mod


def install_stand_ins() -> None:
    """Stand-ins for ``timm.models.layers`` and ``basicsr``'s registry, each only if missing."""
    import torch.nn as tnn

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    class DropPath(tnn.Module):
        def __init__(self, drop_prob=0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        _module("timm"), _module("timm.models")
        _module("timm.models.layers", DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=tnn.init.trunc_normal_)
        _STAND_INS.append("timm.models.layers")
    try:
        import basicsr.utils.registry  # noqa: F401
    except ImportError:
        class AcceptingRegistry:  # registration does not matter when the class is imported directly
            def register(self, obj=None, **_):
                return obj if obj is not None else (lambda o: o)

            def __getattr__(self, name):
                return lambda *args, **kwargs: None

        for name in ("basicsr", "basicsr.utils", "basicsr.archs"):
            _module(name)
        _module("basicsr.utils.registry", ARCH_REGISTRY=AcceptingRegistry())
        _module("basicsr.archs.arch_util", to_2tuple=to_2tuple, trunc_normal_=tnn.init.trunc_normal_)
        _STAND_INS.append("basicsr registry")


def _exec_file(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_file(path: Path) -> types.ModuleType:
    """The official file at ``path``, after loading the ``basicsr.archs`` siblings it imports."""
    path = Path(path)
    for sibling in re.findall(r"from basicsr\.archs import (\w+)", path.read_text()):
        if (path.parent / f"{sibling}.py").exists() and "basicsr.archs" in sys.modules:
            setattr(sys.modules["basicsr.archs"], sibling,
                    _exec_file(path.parent / f"{sibling}.py", f"basicsr.archs.{sibling}"))
    return _exec_file(path, f"_official_{path.stem}")
