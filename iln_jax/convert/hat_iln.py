"""Converter spec for the official i-LN HAT (2minkyulee/i-LN ``hat_iLN_arch.HAT_iLN``).

The same Flax module as ``hat`` with ``norm="iln"``; only the layout differs: every norm's affine
is named ``gamma``/``beta``, and the official i-LN configs divide the input by the RGB std
(``stdnorm: True``). The official ``eps`` argument is the Flax model's ``norm_eps``.
"""
from __future__ import annotations

import dataclasses

from iln_jax.convert.hat import SPEC as HAT_SPEC

SPEC = dataclasses.replace(HAT_SPEC, norm="iln", norm_names=("gamma", "beta"), defaults={"stdnorm": True},
                           kwarg_renames={"eps": "norm_eps"})
