"""How images are read besides the default: aspect ratio kept and padded, colour, and the working size chosen for
large images; old models and the default 160x60 task read exactly as before."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import captcha_predict
import captcha_test
import captcha_train
from captchakit.api import load_model
from captchakit.checkpoint import read_checkpoint
from captchakit.data import cache as cd
from captchakit.data.colour import GREY_ENOUGH, edge_share
from captchakit.data.images import load_as, load_image, to_tensor
from captchakit.data.synth import SeededSecrets
from captchakit.export.onnx import onnx_input
from captchakit.model import CaptchaCNN
from captchakit.serve.input import Upload
from captchakit.settings import Settings
from captchakit.train import finetune, prepare
from captchakit.train.config import TrainConfig

FAST = ["--epochs", "1", "--batch-size", "16", "--threads", "2"]
RED, GREEN = (200, 60, 60), (40, 150, 40)  # about one luma (PIL's grey): 102 and 105


def square_on(size: tuple[int, int], background) -> Image.Image:
    """A black square in the middle of a `background` image of `size`."""
    image = Image.new("RGB", size, background)
    w, h = size
    image.paste((0, 0, 0), (w // 2 - h // 4, h // 4, w // 2 + h // 4, 3 * h // 4))
    return image


def bbox(dark: np.ndarray) -> tuple[int, int]:
    """(width, height) of the True pixels' bounding box."""
    rows, cols = np.nonzero(dark)
    return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


def colour_captchas(folder, count: int, size=(64, 32), seed: int = 0) -> None:
    """Red characters on a green ground of about the same luma: grey all but loses them."""
    import captcha.image

    folder.mkdir(parents=True, exist_ok=True)
    rng = SeededSecrets(seed)
    gen = captcha.image.ImageCaptcha(width=size[0], height=size[1], font_sizes=(22, 25, 28))
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(captcha.image, "secrets", rng)  # the library's own draws, seeded
    try:
        for i in range(count):
            label = "".join(rng.choice("ABC123") for _ in range(4))
            mask = gen.generate_image(label, (0, 0, 0), (255, 255, 255, 255)).convert("L")
            image = Image.composite(Image.new("RGB", size, RED), Image.new("RGB", size, GREEN), mask)
            image.save(folder / f"{label}_{i:03d}.png")
    finally:
        monkeypatch.undo()


def grey_pngs(folder, count: int, size: tuple[int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        square_on(size, (200, 200, 200)).convert("L").save(folder / f"AB{i % 10}_{i:03d}.png")


# --- reading ------------------------------------------------------------------------------


def test_keep_aspect_fits_the_image_and_pads_with_its_own_background():
    image = square_on((200, 50), (90, 160, 220))  # 4:1 read into 2:1
    fitted = load_image(image, 100, 50, keep_aspect=True)
    assert fitted.shape == (50, 100)
    background = load_image(Image.new("RGB", (1, 1), (90, 160, 220)), 1, 1)[0, 0]
    assert (fitted[:12] == background).all() and (fitted[-12:] == background).all()  # padded above and below
    w, h = bbox(fitted < 60)
    assert abs(w - h) <= 1, "a square stays square"
    w, h = bbox(load_image(image, 100, 50) < 60)
    assert w < 0.7 * h, "stretched, as a model without keep_aspect reads it"


def test_keep_aspect_at_the_same_shape_is_the_plain_resize():
    image = square_on((320, 120), "white")
    assert np.array_equal(load_image(image, 160, 60, keep_aspect=True), load_image(image, 160, 60))


def test_the_default_reading_is_byte_for_byte_the_one_before_these_modes(tiny_data):
    files = sorted((tiny_data / "train").glob("*.png"))[:5]
    for source in [*files, square_on((200, 80), (250, 240, 230))]:
        image = source if isinstance(source, Image.Image) else Image.open(source)
        before = np.asarray(image.convert("L").resize((160, 60), Image.Resampling.BILINEAR), dtype=np.uint8)
        assert np.array_equal(load_as(source, Settings()), before)
        assert np.array_equal(load_image(source, 160, 60), before)


def test_colour_arrays_have_three_channels_in_rgb_order_and_the_network_reads_them():
    image = square_on((64, 32), RED)
    rgb = load_image(image, 64, 32, channels=3)
    assert rgb.shape == (32, 64, 3) and tuple(rgb[0, 0]) == RED
    x = to_tensor(np.stack([rgb, rgb]))
    assert x.shape == (2, 3, 32, 64) and x[0, :, 0, 0].mul(255).round().tolist() == list(RED)
    assert np.allclose(onnx_input(np.stack([rgb, rgb])), x.numpy())
    settings = Settings(width=64, height=32, channels=3)
    model = CaptchaCNN(settings).eval()
    assert model.features[1][0].in_channels == 12  # the stem's 2x2 blocks of 3 channels
    with torch.no_grad():
        assert model(x).shape == (2, settings.length * model.codec.num_classes)
    grey = load_image(image.convert("L"), 64, 32, channels=3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_the_cache_keys_on_the_reading_and_keeps_the_default_file(tmp_path):
    colour_captchas(tmp_path / "c", 6)
    grey = cd.pack_folder(tmp_path / "c", 64, 32)
    colour = cd.pack_folder(tmp_path / "c", 64, 32, channels=3)
    fitted = cd.pack_folder(tmp_path / "c", 48, 32, keep_aspect=True, channels=3)
    assert grey.images.shape == (6, 32, 64) and colour.images.shape == (6, 32, 64, 3) and fitted.images.shape == (6, 32, 48, 3)
    names = sorted(p.name for p in (tmp_path / "c" / cd.CACHE_DIR).glob("*.npy"))
    assert names == ["48x32-fit-rgb.npy", "64x32-rgb.npy", "64x32.npy"]
    assert np.array_equal(cd.pack_folder(tmp_path / "c", 64, 32, channels=3).images, colour.images)  # reused


def test_a_server_upload_keeps_colour_for_a_colour_model():
    buf = io.BytesIO()
    square_on((64, 32), RED).save(buf, "PNG")
    assert Upload(buf.getvalue(), "image").decode().pixels.shape == (32, 64)
    assert Upload(buf.getvalue(), "image").decode(channels=3).pixels.shape == (32, 64, 3)


# --- settings read off the data -----------------------------------------------------------


@pytest.mark.parametrize(
    "size, flags, want",
    [
        ((640, 360), {}, (160, 90, True)),  # large: 16:9 kept, tall enough for 160 columns
        ((1280, 320), {}, (256, 64, True)),  # large and wide: 64 high is enough
        ((470, 80), {}, (376, 64, True)),  # wide: its width costs what it needs
        ((160, 60), {}, (160, 60, False)),  # small: as before
        ((640, 360), {"width": 640, "height": 360}, (640, 360, False)),  # the flags still force a size
        ((160, 60), {"keep_aspect": True}, (160, 60, True)),  # --keep-aspect: small images fitted too
        ((120, 40), {"width": 256, "height": 64, "keep_aspect": True}, (256, 64, True)),  # a general reader's size
    ],
)
def test_a_working_size_caps_the_height_and_keeps_the_median_aspect(tmp_path, size, flags, want):
    grey_pngs(tmp_path / "d", 5, size)
    s = prepare.infer_settings(TrainConfig(train_dir=str(tmp_path / "d"), **flags), stem=2)
    assert (s.width, s.height, s.keep_aspect, s.channels) == (*want, 1)


def test_colour_is_chosen_where_grey_loses_the_text_and_the_flags_force_it(tmp_path, tiny_data):
    colour_captchas(tmp_path / "c", 8)
    rgb = load_image(next((tmp_path / "c").glob("*.png")), 64, 32, channels=3)
    assert edge_share(rgb) < GREY_ENOUGH <= edge_share(np.repeat(rgb.mean(2, keepdims=True).astype(np.uint8), 3, 2))
    assert prepare.infer_settings(TrainConfig(train_dir=str(tmp_path / "c")), 2).channels == 3
    assert prepare.infer_settings(TrainConfig(train_dir=str(tmp_path / "c"), color=False), 2).channels == 1
    # The captcha library's own style (dark coloured text on light) stays grey, at its own size: the default task.
    default = prepare.infer_settings(TrainConfig(train_dir=str(tiny_data / "train")), 2)
    assert (default.width, default.height, default.keep_aspect, default.channels) == (160, 60, False, 1)
    assert prepare.infer_settings(TrainConfig(train_dir=str(tiny_data / "train"), color=True), 2).channels == 3


def test_old_settings_dicts_read_as_before():
    old = {"charset": "0123456789", "length": 5, "width": 120, "height": 40, "min_length": 5, "ignore_case": False}
    s = Settings.from_dict(old)
    assert (s.keep_aspect, s.channels) == (False, 1) and s.array_shape == (40, 120)
    assert s.describe() == "5 characters from '0123456789' (10), 120x40 images"
    with pytest.raises(ValueError, match="channels"):
        Settings(channels=2)


def test_an_old_model_file_reads_the_same(tiny_model, tiny_data, tmp_path):
    ckpt = read_checkpoint(tiny_model)
    for key in ("keep_aspect", "channels"):
        ckpt["settings"].pop(key)
    old = tmp_path / "old.pkl"
    torch.save(ckpt, old)
    files = sorted((tiny_data / "predict").glob("*.png"))
    assert load_model(old, "cpu").predict_batch(files) == load_model(tiny_model, "cpu").predict_batch(files)


# --- a colour model, end to end -----------------------------------------------------------


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colour") / "data"
    colour_captchas(folder, 48)
    model = folder.parent / "m.pkl"
    assert captcha_train.main(["--train-dir", str(folder), "--val-split", "0.25", "--color", "--model", str(model), *FAST]) == 0
    return folder, model


def test_a_colour_run_saves_a_colour_model_that_predict_and_test_read(colour_model, cli, tmp_path):
    folder, model = colour_model
    assert read_checkpoint(model)["settings"]["channels"] == 3
    recognizer = load_model(model, "cpu")
    assert recognizer.prepare(next(folder.glob("*.png"))).shape == (32, 64, 3)
    code, out, _ = cli(captcha_predict.main, "--model", model, folder)
    assert code == 0 and len(out.splitlines()) == 48
    code, out, err = cli(captcha_test.main, "--model", model, "--data", folder, "--report", tmp_path / "r")
    assert code == 0, err
    assert (tmp_path / "r" / "errors.png").exists()  # the gallery of misread captchas, in colour


def test_a_colour_model_exports_to_onnx_that_reads_it_alike(colour_model, tmp_path, cli):
    pytest.importorskip("onnxruntime", reason='ONNX is an optional extra: pip install -e ".[onnx]"')
    import captcha_export

    folder, model = colour_model
    out = tmp_path / "m.onnx"
    code, _, err = cli(captcha_export.main, "--model", model, "--onnx", out)
    assert code == 0, err
    onnx_model, torch_model = load_model(out, "cpu"), load_model(model, "cpu")
    assert onnx_model.settings.channels == 3
    files = sorted(folder.glob("*.png"))[:8]
    got, want = onnx_model.predict_batch(files), torch_model.predict_batch(files)
    assert [p.text for p in got] == [p.text for p in want]


def test_init_from_a_grey_model_starts_a_colour_one_that_reads_grey_images_alike(tiny_model):
    grey = load_model(tiny_model, "cpu").model.eval()
    colour = CaptchaCNN(grey.settings.with_(channels=3), grey.config)
    finetune.init_from(str(tiny_model), colour)
    x = torch.rand(2, 1, grey.settings.height, grey.settings.width)
    with torch.no_grad():
        assert torch.allclose(colour.eval().features(x.expand(-1, 3, -1, -1).contiguous()), grey.features(x), atol=1e-4)


def test_the_cuda_path_sends_colour_batches_as_uint8_and_lays_them_out_as_to_tensor(monkeypatch):
    from captchakit.train.engine import Engine

    sent = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, non_blocking=False: sent.append(self.dtype) or self)
    images = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    x, _ = Engine(torch.nn.Identity(), torch.device("cuda", 0), "bf16").to_device(images, np.ones((2, 3), np.int64))
    monkeypatch.undo()
    assert sent == [torch.uint8, torch.int64] and x.shape == (2, 3, 4, 5)
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, to_tensor(images))
