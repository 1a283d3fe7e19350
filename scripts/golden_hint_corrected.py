"""HINT's corrected HMHA (``iln_jax.models.hint``, ``faithful=False``) written on the official modules.

The official ``Attention.forward`` ranks channels by the batch-mean q, keeps one batch-mean cache
updated with a floor division, and leaves the attention output in the ranked channel order. The
corrected design, which the JAX port offers as ``faithful=False``, changes exactly these points:

1. the ranking comes per image (``torch.corrcoef`` of each image's q);
2. the cache is per image, and each group's resized map enters it times ``c_i / C`` (true division);
3. the groups' outputs and q̂ + k̂ go back to the original channel order before the intra
   modulation and ``project_out``;
4. no state across calls: every forward starts without a cache (the official first call).

Everything else (the official convs, modulators, temperature, group sizes, the 0.9 cache decay,
bilinear resizing and adaptive pooling) is the official code's. ``install(model)`` swaps the
forward of every official ``Attention`` inside an official ``HINT`` for :func:`corrected_forward`;
the caller resets ``model.qv_cache`` before each call (point 4).

This is a second, independent implementation of the corrected design (PyTorch, on the official
modules), not official output: there is no official code for it.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

CACHE_DECAY = 0.9


def _rank_per_image(q: torch.Tensor) -> torch.Tensor:
    """(B, C, N) -> (B, C) channel order by mean correlation, descending, per image."""
    return torch.stack([torch.sort(torch.corrcoef(qi).mean(dim=1), descending=True)[1] for qi in q])


def _gather(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return t.gather(1, order[:, :, None].expand_as(t))


def _scatter_back(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_gather``: row j of ``t`` returns to channel ``order[:, j]``."""
    return torch.empty_like(t).scatter_(1, order[:, :, None].expand_as(t), t)


def _layer_cache(maps: list[torch.Tensor], channels: int) -> torch.Tensor:
    total = 0
    for attn in maps:
        size = attn.shape[-1]
        up = F.interpolate(attn.detach()[:, None], size=(channels, channels), mode="bilinear", align_corners=False)
        total = total + up[:, 0] * size / channels
    return total


def corrected_forward(self, x: torch.Tensor, qv_cache=None):
    b, c, h, w = x.shape
    q, k, v = (t.reshape(b, c, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
    order = _rank_per_image(q)
    q, k, v = (_gather(t, order) for t in (q, k, v))
    sizes = [int(r / sum(self.group) * c) for r in self.group]
    if qv_cache is not None and qv_cache.shape[-1] != c:
        qv_cache = F.adaptive_avg_pool2d(qv_cache, c)
    maps, outs, qk, start = [], [], [], 0
    for i, size in enumerate(sizes):
        qh = F.normalize(q[:, start:start + size], dim=-1)
        kh = F.normalize(k[:, start:start + size], dim=-1)
        attn = ((qh @ kh.transpose(-2, -1)) * self.temperature[i]).softmax(dim=-1)
        if qv_cache is not None:
            attn = self.inter_modulators[i](attn, qv_cache) + attn
        maps.append(attn)
        outs.append(attn @ v[:, start:start + size])
        qk.append(qh.detach() + kh.detach())
        start += size
    update = _layer_cache(maps, c)
    qv_cache = CACHE_DECAY * update if qv_cache is None else CACHE_DECAY * qv_cache + (1 - CACHE_DECAY) * update
    out = _scatter_back(torch.cat(outs, 1), order)
    out = self.intra_modulator(out, _scatter_back(torch.cat(qk, 1), order)) + out
    return [self.project_out(out.reshape(b, c, h, w)), qv_cache]


def install(model: torch.nn.Module, attention_cls: type) -> int:
    """Give every ``attention_cls`` (the official ``Attention``) in ``model`` the corrected forward."""
    count = 0
    for module in model.modules():
        if isinstance(module, attention_cls):
            module.forward = types.MethodType(corrected_forward, module)
            count += 1
    return count
