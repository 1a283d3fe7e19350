"""The official checkpoints, by name.

Facts from the official repositories (file names, constructor arguments and the ``param_key`` of
their test configs, the padding of their test scripts):

* SwinIR (JingyunLiang/SwinIR, ``main_test_swinir.py``): GitHub release v0.0, direct downloads.
  The test script pads every image by 1..window px with a mirror that repeats the edge pixel
  (``symmetric``) and loads ``params`` (``params_ema`` for real-world SR), falling back to the
  whole file.
* HAT (XPixelGroup/HAT), DRCT (ming053l/DRCT), the i-LN HAT (2minkyulee/i-LN): BasicSR test
  configs (``options/test/*.yml``, ``param_key_g: params_ema``); their models pad by reflection to
  the next multiple of the window, only where needed. Files are in Google Drive folders.
* Restormer (swz30/Restormer) and HINT (joshyZhou/HINT): test scripts pad by reflection to the
  next multiple of 8 and load ``params``. Restormer files are in Google Drive folders, HINT's on
  Baidu Netdisk (the access code is on the README); HINT's file names are its test scripts'.

No ``size``/``sha256`` is recorded yet: record them from a verified copy with
``python -m iln_jax.pretrained record NAME``, which prints the line to paste here.
"""
from __future__ import annotations

from iln_jax.pretrained.entry import Pretrained

SWINIR_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
SWINIR_PAGE = "https://github.com/JingyunLiang/SwinIR/releases/tag/v0.0"
HAT_PAGE = "https://drive.google.com/drive/folders/1HpmReFfoUqUbnAOQ7rvOeNU3uf_m69w0"
DRCT_PAGE = "https://drive.google.com/drive/folders/1QJHdSfo-0eFNb96i8qzMJAPw31u9qZ7U"
ILN_PAGE = "https://drive.google.com/drive/folders/1vAv1qw_jYsk0TIJhegjrJkYG3Rycey8c"
RESTORMER_DERAIN_PAGE = "https://drive.google.com/drive/folders/1ZEDDEVW0UgkpWi-N4Lj_JUoVChGXCu_u"
RESTORMER_DENOISE_PAGE = "https://drive.google.com/drive/folders/1Qwsjyny54RZWa7zC4Apg7exixLBo4uF0"
HINT_RAIN100L_PAGE = "https://pan.baidu.com/s/1k93yGwD3m9MF5XwnKXQrOQ (access code on github.com/joshyZhou/HINT)"
HINT_WB_PAGE = "https://pan.baidu.com/s/1SHR6ybZ_uZ4YX9XTTjvdZQ (access code on github.com/joshyZhou/HINT)"


def _swinir(name, file_name, variant, task, *, scale=1, param_key="params", **fields):
    return Pretrained(name=name, arch="swinir", file_name=file_name, page=SWINIR_PAGE, url=SWINIR_RELEASE + file_name,
                      task=task, scale=scale, padding="symmetric", variant=variant, param_key=param_key, **fields)


def _swinir_zoo():
    for s in (2, 3, 4, 8):
        yield _swinir(f"swinir-classical-x{s}", f"001_classicalSR_DF2K_s64w8_SwinIR-M_x{s}.pth", "swinir-classical",
                      "sr", scale=s)
        yield _swinir(f"swinir-classical-div2k-x{s}", f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth",
                      "swinir-classical", "sr", scale=s, kwargs={"img_size": 48})
    for s in (2, 3, 4):
        yield _swinir(f"swinir-lightweight-x{s}", f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth",
                      "swinir-lightweight", "sr", scale=s)
    yield _swinir("swinir-realsr-m-x4", "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth", "swinir-realsr-m", "sr",
                  scale=4, param_key="params_ema", note="real-world SR (GAN): no ground truth in the official test")
    yield _swinir("swinir-realsr-l-x4", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", "swinir-realsr-l",
                  "sr", scale=4, param_key="params_ema", note="real-world SR (GAN): no ground truth in the official test")
    for sigma in (15, 25, 50):
        yield _swinir(f"swinir-gray-dn-{sigma}", f"004_grayDN_DFWB_s128w8_SwinIR-M_noise{sigma}.pth", "swinir-dn",
                      "dn", kwargs={"in_chans": 1}, noise_sigma=sigma)
        yield _swinir(f"swinir-color-dn-{sigma}", f"005_colorDN_DFWB_s128w8_SwinIR-M_noise{sigma}.pth", "swinir-dn",
                      "dn", noise_sigma=sigma)
    for q in (10, 20, 30, 40):
        yield _swinir(f"swinir-gray-car-{q}", f"006_CAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth", "swinir-car", "car",
                      kwargs={"in_chans": 1}, jpeg_quality=q)
        yield _swinir(f"swinir-color-car-{q}", f"006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth", "swinir-car", "car",
                      jpeg_quality=q)


def _basicsr_sr(name, file_name, arch, variant, scale, page, **fields):
    return Pretrained(name=name, arch=arch, file_name=file_name, page=page, task="sr", scale=scale, padding="reflect",
                      variant=variant, param_key="params_ema", **fields)


def _hat_drct_zoo():
    for s in (2, 3, 4):
        yield _basicsr_sr(f"hat-s-x{s}", f"HAT-S_SRx{s}.pth", "hat", "hat-s", s, HAT_PAGE)
        yield _basicsr_sr(f"hat-x{s}", f"HAT_SRx{s}.pth", "hat", "hat", s, HAT_PAGE)
        yield _basicsr_sr(f"hat-imagenet-x{s}", f"HAT_SRx{s}_ImageNet-pretrain.pth", "hat", "hat", s, HAT_PAGE,
                          note="pre-trained on ImageNet, fine-tuned on DF2K")
        yield _basicsr_sr(f"hat-l-imagenet-x{s}", f"HAT-L_SRx{s}_ImageNet-pretrain.pth", "hat", "hat-l", s, HAT_PAGE,
                          note="pre-trained on ImageNet, fine-tuned on DF2K")
    yield _basicsr_sr("hat-real-gan-x4", "Real_HAT_GAN_SRx4.pth", "hat", "hat", 4, HAT_PAGE,
                      note="real-world SR (GAN): no ground truth in the official test")
    for s in (2, 3, 4):
        yield _basicsr_sr(f"drct-x{s}", f"DRCT_SRx{s}.pth", "drct", "drct", s, DRCT_PAGE)
        yield _basicsr_sr(f"drct-imagenet-x{s}", f"DRCT_SRx{s}_ImageNet-pretrain.pth", "drct", "drct", s, DRCT_PAGE,
                          note="pre-trained on ImageNet, fine-tuned on DF2K")
        yield _basicsr_sr(f"drct-l-imagenet-x{s}", f"DRCT-L_SRx{s}_ImageNet-pretrain.pth", "drct", "drct-l", s,
                          DRCT_PAGE, note="pre-trained on ImageNet, fine-tuned on DF2K")


def _iln_zoo():
    # The i-LN paper's models (its Drive folder has HAT-mini/ and HAT-dagger/ subfolders).
    for s in (2, 4):
        yield _basicsr_sr(f"iln-hat-mini-ln-x{s}", f"SRx{s}_HAT-mini_baseline.pth", "hat", "hat-mini", s, ILN_PAGE,
                          kwargs={"stdnorm": False}, note="the i-LN paper's HAT_1 with LayerNorm (baseline)")
        yield _basicsr_sr(f"iln-hat-mini-x{s}", f"SRx{s}_HAT-mini_iLN.pth", "hat_iln", "hat-mini", s, ILN_PAGE,
                          kwargs={"eps": 1e-4}, note="the i-LN paper's HAT_1 with i-LN")
        yield _basicsr_sr(f"iln-hat-x{s}", f"SRx{s}_HAT-dagger_iLN.pth", "hat_iln", "hat", s, ILN_PAGE,
                          note="the i-LN paper's full-size HAT (HAT-dagger) with i-LN")


def _unet(name, arch, file_name, page, task, **fields):
    return Pretrained(name=name, arch=arch, file_name=file_name, page=page, task=task, padding="reflect",
                      param_key="params", **fields)


def _unet_zoo():
    yield _unet("restormer-derain", "restormer", "deraining.pth", RESTORMER_DERAIN_PAGE, "dr")
    gray = {"inp_channels": 1, "out_channels": 1, "LayerNorm_type": "BiasFree"}
    color = {"LayerNorm_type": "BiasFree"}
    yield _unet("restormer-color-dn-blind", "restormer", "gaussian_color_denoising_blind.pth", RESTORMER_DENOISE_PAGE,
                "dn", kwargs=color, noise_sigma=25, note="one model for every noise level")
    yield _unet("restormer-gray-dn-blind", "restormer", "gaussian_gray_denoising_blind.pth", RESTORMER_DENOISE_PAGE,
                "dn", kwargs=gray, noise_sigma=25, note="one model for every noise level")
    for sigma in (15, 25, 50):
        yield _unet(f"restormer-color-dn-{sigma}", "restormer", f"gaussian_color_denoising_sigma{sigma}.pth",
                    RESTORMER_DENOISE_PAGE, "dn", kwargs=color, noise_sigma=sigma)
        yield _unet(f"restormer-gray-dn-{sigma}", "restormer", f"gaussian_gray_denoising_sigma{sigma}.pth",
                    RESTORMER_DENOISE_PAGE, "dn", kwargs=gray, noise_sigma=sigma)
    # faithful=True: the official forward the weights were trained with; every image starts without
    # a query-value cache (the official test carries one from image to image).
    hint = {"heads": (8, 8, 8, 8), "faithful": True}
    yield _unet("hint-derain-rain100l", "hint", "Rain100L_HINT.pth", HINT_RAIN100L_PAGE, "dr", kwargs=hint)
    yield _unet("hint-color-dn-blind", "hint", "net_g_latest_blind.pth", HINT_WB_PAGE, "dn", kwargs=hint,
                noise_sigma=25, note="one model for every noise level")


ZOO: tuple[Pretrained, ...] = (*_swinir_zoo(), *_hat_drct_zoo(), *_iln_zoo(), *_unet_zoo())
