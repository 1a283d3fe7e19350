"""A stand-in for the official PyTorch checkouts, so that ``bench/accelerator.py --dry-run`` runs its
PyTorch path where none is at hand (CI).

:func:`write_checkout` writes the files ``bench/train_step.py`` looks for in a checkout
(``models/network_swinir.py``, ``hat/archs/hat_arch.py``, ``basicsr/archs/hat_iLN_arch.py``), each
defining the official class name as :func:`standin_class`. A stand-in takes the official constructor
arguments and has the official state dict's parameters and buffers (names and shapes, as
``iln_jax.convert.to_torch`` writes them), so strict loading, Adam, the EMA, autocast, device
placement, the FLOP counter and the timing run as they do with the real class. Its forward pass is
NOT the network (a nearest-neighbour upscale plus a small term that reaches every parameter): its
outputs, FLOPs and speed mean nothing, and the accelerator report marks its rows as the stand-in's.
"""
from __future__ import annotations

from pathlib import Path

# checkout file -> (official class name, iln_jax.convert arch)
FILES = {"models/network_swinir.py": ("SwinIR", "swinir"), "hat/archs/hat_arch.py": ("HAT", "hat"),
         "basicsr/archs/hat_iLN_arch.py": ("HAT_iLN", "hat_iln")}
MARKER = "official_standin"  # in every written file: how a report tells the stand-in from a checkout


def write_checkout(folder: Path) -> Path:
    for rel, (cls, arch) in FILES.items():
        path = Path(folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {MARKER}: bench/official_standin.py, not the official code\n"
                        f"from official_standin import standin_class\n{cls} = standin_class({arch!r})\n")
    return Path(folder)


def is_standin(checkout: Path) -> bool:
    return any(MARKER in (Path(checkout) / rel).read_text() for rel in FILES if (Path(checkout) / rel).exists())


def standin_class(arch: str):
    import jax
    import numpy as np
    import torch
    from torch import nn
    from iln_jax import convert

    class Standin(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            module = convert.build(arch, **kwargs)
            shape = convert.arch_spec(arch).example_input(module)
            # Only names, shapes and dtypes are needed (the caller loads its weights strictly): an
            # abstract init, as the model's init run op by op compiled each of its hundreds of ops.
            abstract = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, np.float32))
            variables = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)
            self.upscale = int(kwargs.get("upscale", 1))
            for key, value in convert.to_torch(arch, variables, **kwargs).items():
                *path, leaf = key.split(".")
                owner = self
                for name in path:
                    if not hasattr(owner, name):
                        owner.add_module(name, nn.Module())
                    owner = getattr(owner, name)
                tensor = torch.from_numpy(np.array(value))
                if tensor.is_floating_point() and not leaf.endswith("attn_mask"):
                    owner.register_parameter(leaf, nn.Parameter(tensor))
                else:
                    owner.register_buffer(leaf, tensor)

        def forward(self, x):
            touch = sum(p.float().mean() for p in self.parameters())
            return nn.functional.interpolate(x, scale_factor=self.upscale, mode="nearest") + 1e-3 * touch

    Standin.__name__ = Standin.__qualname__ = f"Standin_{arch}"
    return Standin
