"""Validation on the mesh: the training run's Validator (through the one inference stack, the
Restorer) restores the eval set data parallel over the 8 host devices of the test process
(conftest.py). One device computes exactly the pre-mesh validator's ``model.apply`` (the model's own
padding); the mesh computes the same images, each on its own device, to the last float bit or one
ulp (XLA compiles the multi-device program on its own), so the uint8 images and every PSNR/SSIM
are identical."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

from iln_jax import data as data_lib, metrics
from iln_jax.train.loop import build_model
from iln_jax.train.validate import Validator
from train_util import tiny_config


@pytest.fixture(scope="module")
def setup():
    config = tiny_config("configs/swinir.py:tiny=1")
    model = build_model(config)
    photos = data_lib.make_eval_set(config.data)
    # 9 images of one shape (two global batches, the second padded) and two of other shapes.
    eval_set = [dict(im, name=f"{im['name']}_{i}") for i in range(-(-9 // len(photos))) for im in photos][:9]
    eval_set += [dict(name=f"crop{h}x{w}", lq=photos[0]["lq"][:h, :w], gt=photos[0]["gt"][:2 * h, :2 * w])
                 for h, w in ((37, 50), (64, 21))]
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(3), eval_set[0]["lq"][None])
    return model, variables, eval_set


def test_mesh_validation_equals_one_device(setup):
    model, variables, eval_set = setup
    assert len(jax.devices()) == 8
    mesh = Mesh(np.asarray(jax.devices()), ("data",), axis_types=(AxisType.Auto,))
    kw = dict(scale=2, crop_border=2, test_y_channel=True)
    on_mesh = Validator(model, eval_set, mesh=mesh, **kw)
    one = Validator(model, eval_set, **kw)
    outs_mesh = on_mesh.restorer(variables).restore_many([im["lq"] for im in eval_set])
    outs_one = one.restorer(variables).restore_many([im["lq"] for im in eval_set])
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    for im, a, b in zip(eval_set, outs_mesh, outs_one):
        np.testing.assert_array_equal(b, np.asarray(apply(variables, im["lq"][None]))[0], err_msg=im["name"])
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-7, err_msg=im["name"])
        np.testing.assert_array_equal(metrics.to_uint8_image(a), metrics.to_uint8_image(b), err_msg=im["name"])
    s_mesh, s_one = on_mesh(variables, step=1), one(variables, step=1)
    assert s_mesh["per_image"] == s_one["per_image"] and s_mesh["psnr"] == s_one["psnr"]
    assert np.isfinite(s_mesh["psnr"]) and s_mesh["per_image"].keys() == {im["name"] for im in eval_set}
