"""TensorBoard event files as TensorBoard reads them: every record framed and checksummed (CRC-32C by
tensorboardX, not by the writer's own code), decoded by tensorboardX's ``Event`` protos; a run's
scalars and images end up in its ``tb/`` file; writing them never imports PyTorch."""
import io
import struct
import subprocess
import sys

import numpy as np
import pytest
from etils import epath
from PIL import Image

from iln_jax.train.event_file import EventFile, crc32c
from train_util import ROOT, worker_env

tbx_crc = pytest.importorskip("tensorboardX.crc32c")
event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path) -> list:
    """Every Event of a file, each record's length and data CRCs checked with tensorboardX's CRC-32C."""
    data, events, at = open(path, "rb").read(), [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[at + 8:at + 12])
        assert header_crc == _masked(tbx_crc.crc32c(header))
        body = data[at + 12:at + 12 + length]
        assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == _masked(tbx_crc.crc32c(body))
        events.append(event_pb2.Event.FromString(body))
        at += 16 + length
    return events


def test_crc32c_is_castagnolis():
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    payload = np.random.default_rng(0).bytes(1000)
    assert crc32c(payload) == tbx_crc.crc32c(payload)


def test_scalars_images_and_the_purge_step_decode(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = image[..., :1]
    tb = EventFile(epath.Path(tmp_path), purge_step=11)
    tb.add_scalar("train/loss", 0.25, 12)
    tb.add_scalar("train/lr", 2e-4, 2**40)  # a step past 32 bits
    tb.add_image("val/img", image, 12)
    tb.add_image("val/gray", gray, 12)
    tb.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    assert path == tb.path
    first, purge, loss, lr, rgb, one = read_events(path)
    assert first.file_version == "brain.Event:2" and first.wall_time > 0
    assert purge.step == 11 and purge.session_log.status == event_pb2.SessionLog.START
    assert (loss.step, loss.summary.value[0].tag, loss.summary.value[0].simple_value) == (12, "train/loss", 0.25)
    assert lr.step == 2**40 and lr.summary.value[0].simple_value == pytest.approx(2e-4)
    for ev, expected in ((rgb, image), (one, gray)):
        img = ev.summary.value[0].image
        assert (img.height, img.width, img.colorspace) == expected.shape
        decoded = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)))
        np.testing.assert_array_equal(decoded.reshape(expected.shape), expected)
    with pytest.raises(ValueError, match="val/bad: expected a uint8 HWC image"):
        EventFile(epath.Path(tmp_path / "other")).add_image("val/bad", image.astype(np.float32), 1)


def test_writing_events_does_not_import_torch(tmp_path):
    script = ("import sys, numpy as np; from etils import epath; from iln_jax.train.logging import MetricWriter; "
              f"w = MetricWriter(epath.Path({str(tmp_path)!r})); w.write_scalars(1, {{'loss': 0.5}}); "
              "w.write_images(1, {'x': np.zeros((4, 4, 3), np.uint8)}); w.close(); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], env=worker_env(1), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    tags = [v.tag for ev in read_events(path) for v in ev.summary.value]
    assert tags == ["train/loss", "val/x"]
