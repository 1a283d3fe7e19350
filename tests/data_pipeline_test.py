"""The grain pipeline: aligned patches, determinism, multi-host sharding, checkpoints, bad inputs."""
import logging
import os

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from iln_jax.data import BadImageError, default_config, make_train_dataset, transforms
from iln_jax.data.imresize import imresize


def _photo_like(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return np.ascontiguousarray(imresize(small, 8)[:h, :w])


def _write(folder, name, array):
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(array).save(os.path.join(folder, name))


@pytest.fixture(scope="module")
def sr_folders(tmp_path_factory):
    """4 HR images of different sizes with MATLAB-bicubic x2 LR (DIV2K naming)."""
    root = tmp_path_factory.mktemp("df2k")
    for i in range(4):
        hr = _photo_like(40 + 4 * i, 48 + 2 * i, seed=i)
        _write(root / "HR", f"{i:04d}.png", hr)
        _write(root / "LR", f"{i:04d}x2.png", imresize(hr, 1 / 2))
    return root


def _config(**overrides):
    config = default_config()
    config.patch_size, config.batch_size = 8, 4
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _batches(config, count, seed=0, **kwargs):
    iterator = iter(make_train_dataset(config, seed=seed, **kwargs))
    batches = [next(iterator) for _ in range(count)]
    iterator.close()
    return batches


def _assert_same(a, b):
    assert a.keys() == b.keys() == {"lq", "gt"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("task,channels,lq_size,gt_size", [
    ("sr", 3, 8, 16), ("dn", 1, 8, 8), ("car", 3, 8, 8), ("dr", 3, 8, 8)])
def test_embedded_batches_for_every_task(task, channels, lq_size, gt_size):
    batch = _batches(_config(task=task, channels=channels), 1, process_index=0, process_count=1)[0]
    assert batch["lq"].shape == (4, lq_size, lq_size, channels) and batch["lq"].dtype == np.float32
    assert batch["gt"].shape == (4, gt_size, gt_size, channels) and batch["gt"].dtype == np.float32
    assert 0 <= batch["gt"].min() and batch["gt"].max() <= 1
    assert not np.array_equal(batch["lq"], batch["gt"][:, :lq_size, :lq_size])


def test_default_config_is_locked_and_checked():
    config = default_config()
    assert (config.task, config.scale, config.patch_size, config.source) == ("sr", 2, 32, "embedded")
    with pytest.raises(AttributeError):
        config.noise_level = 25
    config.noise_sigma = [0, 50]  # a number or a range
    config.task = "denoise"
    with pytest.raises(ValueError, match="'task'"):
        make_train_dataset(config, seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="'jpeg_quality'"):
        make_train_dataset(_config(jpeg_quality=[40, 10]), seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="not divisible by process_count 3"):
        make_train_dataset(_config(), seed=0, process_index=0, process_count=3)


def test_paired_sr_patches_are_aligned(sr_folders):
    """Downscaling each HR patch with imresize reproduces its LR patch (up to the flip/rot90 drawn)."""
    config = _config(source="folder", root=str(sr_folders / "HR"), lr_root=str(sr_folders / "LR"), batch_size=8)
    for batch in _batches(config, 2, process_index=0, process_count=1):
        for lq, gt in zip(batch["lq"], batch["gt"]):
            lq8, gt8 = (np.round(x * 255).astype(np.uint8) for x in (lq, gt))
            # Interior only: at the patch border imresize mirrors the patch instead of reading the image.
            matches = [np.array_equal(imresize(transforms.dihedral([gt8], k)[0], 1 / 2)[2:-2, 2:-2],
                                      transforms.dihedral([lq8], k)[0][2:-2, 2:-2]) for k in range(8)]
            assert any(matches)


def test_lr_made_on_the_fly_equals_premade_lr_folder(sr_folders):
    paired = _config(source="folder", root=str(sr_folders / "HR"), lr_root=str(sr_folders / "LR"))
    on_the_fly = _config(source="folder", root=str(sr_folders / "HR"))
    for a, b in zip(_batches(paired, 3, process_index=0, process_count=1),
                    _batches(on_the_fly, 3, process_index=0, process_count=1)):
        _assert_same(a, b)


def test_tfds_source_prepares_once_and_feeds_every_process(sr_folders, tmp_path):
    """df2k/x2 is prepared from root by a single-process run; later runs of any size just read it."""
    manual = tmp_path / "manual"
    os.makedirs(manual / "DF2K_LR_bicubic")
    os.symlink(sr_folders / "HR", manual / "DF2K_HR")
    os.symlink(sr_folders / "LR", manual / "DF2K_LR_bicubic" / "X2")
    config = _config(source="tfds", root=str(manual), tfds_data_dir=str(tmp_path / "tfds"), batch_size=8)
    batch = _batches(config, 1, process_index=0, process_count=1)[0]
    assert batch["lq"].shape == (8, 8, 8, 3) and batch["gt"].shape == (8, 16, 16, 3)
    assert _batches(config, 1, process_index=1, process_count=2)[0]["gt"].shape == (4, 16, 16, 3)


def test_seed_fixes_batches():
    config = _config(task="dn", noise_sigma=[0, 50])
    first = _batches(config, 2, seed=7, process_index=0, process_count=1)
    for a, b in zip(first, _batches(config, 2, seed=7, process_index=0, process_count=1)):
        _assert_same(a, b)
    other = _batches(config, 1, seed=8, process_index=0, process_count=1)[0]
    assert not np.array_equal(first[0]["gt"], other["gt"])


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_batches_concatenate_to_the_single_process_batch(process_count):
    config = _config(task="car", jpeg_quality=[10, 40], batch_size=8)
    single = _batches(config, 3, process_index=0, process_count=1)
    per_process = [_batches(config, 3, process_index=p, process_count=process_count) for p in range(process_count)]
    for step in range(3):
        for key in ("lq", "gt"):
            assert per_process[0][step][key].shape[0] == 8 // process_count
            merged = np.concatenate([per_process[p][step][key] for p in range(process_count)])
            np.testing.assert_array_equal(merged, single[step][key])


def test_restored_iterator_continues_with_the_next_batch():
    config = _config(task="dn")
    dataset = make_train_dataset(config, seed=3, process_index=0, process_count=1)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator), next(iterator)]
    restored = iter(make_train_dataset(config, seed=3, process_index=0, process_count=1))
    restored.set_state(state)
    for a, b in zip(expected, [next(restored), next(restored)]):
        _assert_same(a, b)


def test_orbax_composite_checkpoint_restores_the_iterator(tmp_path):
    config = _config()
    iterator = iter(make_train_dataset(config, seed=1, process_index=0, process_count=1))
    next(iterator)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    expected = next(iterator)
    fresh = iter(make_train_dataset(config, seed=1, process_index=0, process_count=1))
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    _assert_same(next(fresh), expected)


def test_worker_processes_give_the_same_batches_and_restore(sr_folders):
    """2 workers == 0 workers batch for batch, and a 2-worker state restores.

    One iterator only: starting workers costs seconds (each imports grain and jax), so the restore
    rewinds the running iterator to a saved state instead of starting a second one.
    """
    config = _config(source="folder", root=str(sr_folders / "HR"), batch_size=2, patch_size=4)
    reference = _batches(config, 4, process_index=0, process_count=1)
    config.num_workers = 2
    iterator = iter(make_train_dataset(config, seed=0, process_index=0, process_count=1))
    _assert_same(next(iterator), reference[0])
    state = iterator.get_state()
    for expected in reference[1:]:
        _assert_same(next(iterator), expected)
    iterator.set_state(state)
    _assert_same(next(iterator), reference[1])
    iterator.close()


@pytest.fixture()
def folder_with_bad_files(tmp_path):
    for i in range(3):
        _write(tmp_path / "clean", f"good{i}.png", _photo_like(24, 24, seed=i))
    (tmp_path / "clean" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _write(tmp_path / "clean", "tiny.png", _photo_like(5, 30, seed=9))
    return tmp_path / "clean"


def test_bad_image_errors_name_the_file(folder_with_bad_files):
    config = _config(task="dn", source="folder", root=str(folder_with_bad_files), batch_size=8)
    with pytest.raises(BadImageError, match=r"broken.png|tiny.png is 5x30, smaller than the 8x8"):
        _batches(config, 3, process_index=0, process_count=1)


def test_bad_images_are_skipped_counted_and_reported(folder_with_bad_files, caplog):
    config = _config(task="dn", source="folder", root=str(folder_with_bad_files), batch_size=8,
                     on_bad_image="skip")
    iterator = iter(make_train_dataset(config, seed=0, process_index=0, process_count=1))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            batch = next(iterator)
            assert batch.keys() == {"lq", "gt"} and batch["gt"].shape == (8, 8, 8, 3)
        skipped = iterator.skipped_patches
        assert skipped > 0 and len(iterator.bad_images) == 2
        assert "broken.png" in iterator.bad_images[0] and "tiny.png is 5x30" in iterator.bad_images[1]
        state = iterator.get_state()
        assert state["skipped_patches"] == skipped
        iterator.close()
    assert f"skipped {skipped} patch(es) because of 2 unusable image(s)" in caplog.text
    restored = iter(make_train_dataset(config, seed=0, process_index=0, process_count=1))
    restored.set_state(state)
    assert restored.skipped_patches == skipped and len(restored.bad_images) == 2
    restored.close()


def test_lr_hr_size_mismatch_names_both_files(tmp_path):
    _write(tmp_path / "HR", "a.png", _photo_like(32, 32, 0))
    _write(tmp_path / "LR", "ax2.png", _photo_like(16, 12, 0))
    config = _config(source="folder", root=str(tmp_path / "HR"), lr_root=str(tmp_path / "LR"))
    with pytest.raises(BadImageError, match=r"LR/ax2.png is 16x12, so .*HR/a.png should be"):
        _batches(config, 1, process_index=0, process_count=1)
