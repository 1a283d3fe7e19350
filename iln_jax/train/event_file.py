"""TensorBoard event files (scalars and PNG images), written directly: TFRecord framing around
``tensorflow.Event`` protocol buffers, encoded here.

TensorBoard's own writers come with a framework: tensorboardX imports PyTorch whenever it is
installed (2.3 s and ~400 MB before the first step of every run on a machine that has it), TF's
and flax's writers need TensorFlow. The format is small: each record is ``length (uint64 LE),
masked CRC-32C of the length, the serialized Event, masked CRC-32C of it``; an Event is a few
protobuf fields (``tensorflow/core/util/event.proto``, ``summary.proto``).
"""
from __future__ import annotations

import io
import socket
import struct
import tempfile
import time
from typing import Optional

import numpy as np
from etils import epath

from iln_jax import paths

FILE_VERSION = b"brain.Event:2"
SESSION_START = 1  # SessionLog.START


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli polynomial, reflected
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


# --- protobuf wire format: (field number << 3) | wire type ------------------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _field_double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def _field_float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def event(*, step: int = 0, wall_time: Optional[float] = None, file_version: bytes = b"",
          summary_values: tuple[bytes, ...] = (), session_status: int = 0) -> bytes:
    """A serialized ``Event``: wall_time 1, step 2, file_version 3, summary 5, session_log 7."""
    out = _field_double(1, time.time() if wall_time is None else wall_time)
    if step:
        out += _field_varint(2, step)
    if file_version:
        out += _field_bytes(3, file_version)
    if summary_values:
        out += _field_bytes(5, b"".join(_field_bytes(1, value) for value in summary_values))
    if session_status:
        out += _field_bytes(7, _field_varint(1, session_status))
    return out


def scalar_value(tag: str, value: float) -> bytes:
    """A ``Summary.Value`` with ``simple_value`` (tag 1, simple_value 2)."""
    return _field_bytes(1, tag.encode()) + _field_float(2, value)


def image_value(tag: str, image: np.ndarray) -> bytes:
    """A ``Summary.Value`` with a PNG ``Summary.Image`` (height 1, width 2, colorspace 3, bytes 4) of
    a uint8 HWC image with 1, 3 or 4 channels."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"{tag}: expected a uint8 HWC image with 1, 3 or 4 channels, got {image.dtype} {image.shape}")
    height, width, channels = image.shape
    png = io.BytesIO()
    Image.fromarray(image[..., 0] if channels == 1 else image).save(png, format="PNG")
    body = (_field_varint(1, height) + _field_varint(2, width) + _field_varint(3, channels)
            + _field_bytes(4, png.getvalue()))
    return _field_bytes(1, tag.encode()) + _field_bytes(4, body)


class EventFile:
    """A TensorBoard event file written synchronously (``add_scalar``, ``add_image``, ``flush``),
    named as TensorBoard's writers name theirs (``events.out.tfevents.<time>.<host>``).

    A first event at ``purge_step`` tells TensorBoard to hide the events at and after that step
    from earlier files (``SessionLog.START``), as ``SummaryWriter(purge_step=...)`` does. On an
    object store (``gs://``), where a file cannot be appended to, the events are kept in a local
    staging file and uploaded whole at every flush.
    """

    def __init__(self, logdir: epath.Path, *, purge_step: Optional[int] = None):
        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        self.path = logdir / name
        self._staging = None
        local = logdir
        if paths.is_url(logdir):
            self._staging = tempfile.TemporaryDirectory(prefix="iln_jax_tb_")
            local = epath.Path(self._staging.name)
        self._local_path = local / name
        self._file = open(self._local_path, "ab")
        self._file.write(record(event(file_version=FILE_VERSION)))
        if purge_step is not None:
            self._file.write(record(event(step=purge_step, session_status=SESSION_START)))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._file.write(record(event(step=int(step), summary_values=(scalar_value(tag, float(value)),))))

    def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._file.write(record(event(step=int(step), summary_values=(image_value(tag, image),))))

    def flush(self) -> None:
        self._file.flush()
        if self._staging is not None:
            self.path.write_bytes(self._local_path.read_bytes())

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()
            if self._staging is not None:
                self._staging.cleanup()
