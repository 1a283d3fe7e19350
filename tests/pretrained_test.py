"""iln_jax.pretrained: resumable verified downloads from a local HTTP server (never the internet),
convert-once Orbax cache, local records, eval.py --pretrained, and the built-in zoo's consistency."""
import dataclasses
import hashlib
import http.server
import importlib.util
import io
import json
import pathlib
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax import convert, models, pretrained
from iln_jax.errors import ConfigError
from iln_jax.pretrained import DownloadError, NotDownloadableError, PretrainedError, VerificationError

torch = pytest.importorskip("torch")
ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = dict(upscale=4, img_size=8, window_size=4, depths=[2], num_heads=[2], embed_dim=8, mlp_ratio=2,
            upsampler="pixelshuffle", resi_connection="1conv")


class FileServer(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with HTTP Range; logs every request's path and Range header.

    ``interrupt_next``: bytes to send before dropping the connection on the next response (while
    announcing the full length); ``ignore_range``: answer 200 with the whole file to Range requests.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.log = {}, []
        self.interrupt_next, self.ignore_range = None, False

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        range_header = self.headers.get("Range")
        srv.log.append((self.path, range_header))
        body = srv.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if range_header and not srv.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if srv.interrupt_next is not None:
            cut, srv.interrupt_next = srv.interrupt_next, None
            self.wfile.write(body[start:start + cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tiny_pth():
    """A generated official-layout .pth of a tiny SwinIR x4: (bytes, the Flax variables)."""
    module = convert.build("swinir", **TINY)
    variables = jax.jit(module.init)(jax.random.key(3), jnp.zeros((1, 8, 8, 3)))
    sd = convert.to_torch("swinir", variables, **TINY)
    buf = io.BytesIO()
    torch.save({"params": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, buf)
    return buf.getvalue(), variables


def _entry(server, blob, **overrides):
    server.files["tiny_x4.pth"] = blob
    fields = dict(name="tiny-swinir-x4", arch="swinir", file_name="tiny_x4.pth", page="the test's server",
                  url=server.url("tiny_x4.pth"), task="sr", scale=4, padding="symmetric", kwargs=TINY,
                  param_key="params", size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    return pretrained.Pretrained(**{**fields, **overrides})


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    blob = bytes(range(256)) * 40
    server.files["f.bin"] = blob
    dest, sha = tmp_path / "f.bin", hashlib.sha256(blob).hexdigest()
    server.interrupt_next = 3000
    with pytest.raises(DownloadError, match=r"download interrupted after 3000 bytes .*run again to resume"):
        pretrained.download(server.url("f.bin"), dest, size=len(blob), sha256=sha, attempts=1, progress=False)
    assert (tmp_path / "f.bin.part").stat().st_size == 3000 and not dest.exists()
    assert pretrained.download(server.url("f.bin"), dest, size=len(blob), sha256=sha, progress=False) == sha
    assert dest.read_bytes() == blob and not (tmp_path / "f.bin.part").exists()
    assert server.log == [("/f.bin", None), ("/f.bin", "bytes=3000-")]
    # Within one call, attempts resume by themselves; a server that ignores Range restarts cleanly.
    dest.unlink()
    server.log.clear()
    server.interrupt_next = 1000
    assert pretrained.download(server.url("f.bin"), dest, sha256=sha, progress=False) == sha
    assert server.log == [("/f.bin", None), ("/f.bin", "bytes=1000-")] and dest.read_bytes() == blob
    dest.unlink()
    server.interrupt_next, server.ignore_range = 1000, True
    assert pretrained.download(server.url("f.bin"), dest, sha256=sha, progress=False) == sha
    assert dest.read_bytes() == blob


def test_a_corrupt_or_truncated_download_is_rejected_and_deleted(server, tmp_path):
    blob = bytes(range(256)) * 8
    good = hashlib.sha256(blob).hexdigest()
    bad = bytearray(blob)
    bad[100] ^= 1
    server.files["f.bin"] = bytes(bad)
    dest = tmp_path / "f.bin"
    with pytest.raises(VerificationError, match=f"has sha256 {hashlib.sha256(bad).hexdigest()}; the registry "
                                                f"expects {good} \\(the file was deleted"):
        pretrained.download(server.url("f.bin"), dest, size=len(blob), sha256=good, progress=False)
    server.files["f.bin"] = blob[:-10]
    with pytest.raises(VerificationError, match=f"is {len(blob) - 10} bytes; the registry expects {len(blob)}"):
        pretrained.download(server.url("f.bin"), dest, size=len(blob), sha256=good, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match="HTTP 404"):
        pretrained.download(server.url("missing.bin"), dest, progress=False)


def test_load_pretrained_converts_once_and_the_cache_needs_neither_the_pth_nor_torch(server, tiny_pth, tmp_path,
                                                                                   monkeypatch):
    blob, variables = tiny_pth
    entry = _entry(server, blob)
    loaded = pretrained.load_pretrained(entry, cache_dir=tmp_path, progress=False)
    assert server.log == [("/tiny_x4.pth", None)]
    assert loaded.module.padding == "symmetric" and loaded.module.scale == 4 and loaded.norm == "layernorm"
    assert loaded.data_defaults() == {"task": "sr", "scale": 4} and loaded.source == "tiny-swinir-x4 (tiny_x4.pth)"
    jax.tree.map(np.testing.assert_array_equal, loaded.variables, variables)
    x = jax.random.uniform(jax.random.key(0), (1, 11, 13, 3))
    np.testing.assert_array_equal(loaded.module.apply(loaded.variables, x),
                                  convert.build("swinir", padding="symmetric", **TINY).apply(variables, x))
    # Cache hit: no request, no .pth, no torch.
    (tmp_path / "downloads" / "tiny_x4.pth").unlink()
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
        again = pretrained.load_pretrained(entry, cache_dir=tmp_path, progress=False)
    assert len(server.log) == 1
    jax.tree.map(np.testing.assert_array_equal, again.variables, variables)
    # A changed constructor (here the padding) makes it convert again, downloading what is missing.
    other = pretrained.load_pretrained(dataclasses.replace(entry, padding="reflect"), cache_dir=tmp_path,
                                       progress=False)
    assert other.module.padding == "reflect" and len(server.log) == 2


def test_a_file_without_direct_url_says_where_to_get_it_and_where_to_put_it(tiny_pth, tmp_path, server):
    blob, variables = tiny_pth
    entry = _entry(server, blob, url=None, page="https://drive.example/folder")
    where = tmp_path / "downloads" / "tiny_x4.pth"
    with pytest.raises(NotDownloadableError) as e:
        pretrained.load_pretrained(entry, cache_dir=tmp_path, progress=False)
    assert str(e.value) == (f"tiny-swinir-x4: tiny_x4.pth has no direct download; get it from "
                            f"https://drive.example/folder and put it at {where}")
    where.parent.mkdir(parents=True)
    where.write_bytes(blob[:-1])
    with pytest.raises(VerificationError, match=f"is {len(blob) - 1} bytes; the registry expects {len(blob)}"):
        pretrained.load_pretrained(entry, cache_dir=tmp_path, progress=False)
    assert where.exists()  # a file the user put there is never deleted
    where.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match=f"tiny-swinir-x4: Could not read {where} as a PyTorch checkpoint: .*; "
                                              f"delete {where} and run again"):
        pretrained.load_pretrained(dataclasses.replace(entry, size=None, sha256=None), cache_dir=tmp_path,
                                   progress=False)
    where.write_bytes(blob)
    loaded = pretrained.load_pretrained(entry, cache_dir=tmp_path, progress=False)
    jax.tree.map(np.testing.assert_array_equal, loaded.variables, variables)
    assert server.log == []


def _eval_module():
    spec = importlib.util.spec_from_file_location("eval_cli", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_local_records_new_models_and_eval_pretrained_on_set5(server, tiny_pth, tmp_path, data_dir, capsys):
    blob, _ = tiny_pth
    entry = _entry(server, blob, size=None, sha256=None)
    record = {k: v for k, v in dataclasses.asdict(entry).items() if k != "name"}
    (tmp_path / "registry.json").write_text(json.dumps({"tiny-swinir-x4": record}))
    assert pretrained.get("tiny-swinir-x4", tmp_path).url == entry.url
    out = tmp_path / "out"
    (result,) = _eval_module().main(["--pretrained", "tiny-swinir-x4", "--cache-dir", str(tmp_path), "--data-root",
                                     str(data_dir), "--datasets", "Set5", "--no-progress", "--no-images",
                                     "--max-compiles", "2", "--out", str(out)])
    assert result["task"] == "sr" and result["scale"] == 4 and result["num_images"] == 5
    assert result["settings"]["padding"] == "symmetric" and result["settings"]["model"] == "tiny-swinir-x4 (tiny_x4.pth)"
    assert result["baseline"]["psnr"] == pytest.approx(28.4305, abs=5e-4)
    assert "is not recorded in the registry" in capsys.readouterr().out
    # record pins size + sha256 in the local records; the printed line is ready to paste into zoo.py.
    from iln_jax.pretrained.__main__ import main as pretrained_cli
    pretrained_cli(["--cache-dir", str(tmp_path), "--quiet", "record", "tiny-swinir-x4"])
    sha = hashlib.sha256(blob).hexdigest()
    assert f'size={len(blob)}, sha256="{sha}"' in capsys.readouterr().out
    pinned = pretrained.get("tiny-swinir-x4", tmp_path)
    assert (pinned.size, pinned.sha256) == (len(blob), sha)
    with pytest.raises(ConfigError, match="--pretrained tiny-swinir-x4 sets the model; drop --variant"):
        _eval_module().main(["--pretrained", "tiny-swinir-x4", "--variant", "hat", "--cache-dir", str(tmp_path)])


def test_bad_local_records_are_named(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"hat-x4": {"sha256": "0" * 64, "variant": "hat-l"}}))
    with pytest.raises(PretrainedError, match=f"{path}: 'hat-x4' is a built-in model; only url, size, sha256 may "
                                              f"be set for it, not variant"):
        pretrained.get("hat-x4", tmp_path)
    path.write_text(json.dumps({"hat-x4": {"sha256": "abc"}}))
    with pytest.raises(PretrainedError, match="entry 'hat-x4' has a bad sha256 'abc'"):
        pretrained.get("hat-x4", tmp_path)
    path.write_text(json.dumps({"mine": {"arch": "swinir", "file_name": "m.pth", "task": "sr"}}))
    with pytest.raises(PretrainedError, match="'mine': .*missing 1 required .*'page'"):
        pretrained.get("mine", tmp_path)
    path.write_text(json.dumps({"hat-x4": {"url": "https://mirror.example/HAT_SRx4.pth"}}))
    assert pretrained.get("hat-x4", tmp_path).url == "https://mirror.example/HAT_SRx4.pth"
    with pytest.raises(PretrainedError, match=r"Unknown pretrained model 'hat-x5'; did you mean hat-x"):
        pretrained.get("hat-x5", tmp_path)


def test_the_zoo_builds_every_model_with_its_official_arguments(tmp_path):
    zoo = pretrained.entries(tmp_path)
    assert len({e.file_name for e in zoo.values()}) == len(zoo)
    families = {name.split("-")[0] for name in zoo}
    assert families == {"swinir", "hat", "drct", "iln", "restormer", "hint"}
    for e in zoo.values():
        e.validate()
        module = convert.build(e.arch, **e.constructor_kwargs())
        assert getattr(module, "scale", 1) == e.scale and module.padding == e.padding, e.name
        assert e.url is None or e.url.endswith("/" + e.file_name), e.name
    # Spot checks against the official configs.
    assert zoo["swinir-classical-x2"].url == ("https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
                                              "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth")
    car = convert.build("swinir", **zoo["swinir-gray-car-10"].constructor_kwargs())
    assert (car.in_chans, car.window_size, car.img_range, car.img_size) == (1, 7, 255.0, 126)
    mini = convert.build("hat_iln", **zoo["iln-hat-mini-x4"].constructor_kwargs())
    assert (mini.norm, mini.stdnorm, mini.norm_eps, mini.embed_dim) == ("iln", True, 1e-4, 96)
    assert models.variant_kwargs("hat-l")["depths"] == convert.build(
        "hat", **zoo["hat-l-imagenet-x3"].constructor_kwargs()).depths
    gray = convert.build("restormer", **zoo["restormer-gray-dn-50"].constructor_kwargs())
    assert (gray.inp_channels, gray.LayerNorm_type, zoo["restormer-gray-dn-50"].noise_sigma) == (1, "BiasFree", 50)
    assert {e.url is not None for e in zoo.values() if e.arch != "swinir"} == {False}
