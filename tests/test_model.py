"""The CNN: output shape for other charsets, lengths and image sizes, and model.pkl round trips."""

import copy
import string

import pytest
import torch
from torch import nn

from captcha_setting import Settings
from captchakit.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from captchakit.model import CaptchaCNN, ModelConfig, shift_columns, with_test_shifts


@pytest.mark.parametrize(
    ("settings", "classes"),
    [
        (Settings(), 36),  # the default: 4 of 0-9A-Z, 160x60
        (Settings(charset=string.digits, length=6), 10),
        (Settings(charset="ab", length=1, width=64, height=32), 2),
        (Settings(charset="2345678bcdefgmnpwxy", length=5, width=200, height=50), 19),  # the real captcha_images_v2 set
        (Settings(charset=string.ascii_letters, length=8, width=256, height=64), 52),
        (Settings(charset="abc123", length=5, min_length=3, width=96, height=32), 7),  # variable length: + "no character"
    ],
    ids=["default", "digits6", "ab1-64x32", "real-200x50", "letters8-256x64", "variable-96x32"],
)
@pytest.mark.parametrize("head", ["attention", "flat"])
def test_output_is_one_block_of_logits_per_position(settings, classes, head):
    model = CaptchaCNN(settings, ModelConfig(head=head)).eval()
    assert model.codec.num_classes == classes
    with torch.inference_mode():
        logits = model(torch.rand(3, 1, settings.height, settings.width))
    assert logits.shape == (3, settings.length * classes)
    decoded = model.codec.decode(logits)
    assert len(decoded) == 3
    # Untrained weights may read "no character" at any position, so a variable-length text may come
    # out shorter than min_length here; only the upper bound and the charset hold for any weights.
    assert all(len(text) <= settings.length and set(text) <= set(settings.charset) for text, _ in decoded)
    if settings.min_length == settings.length:
        assert all(len(text) == settings.length for text, _ in decoded)


def test_a_size_that_is_not_a_multiple_of_the_stem_is_refused():
    stem = ModelConfig().stem
    assert stem > 1  # the default stem needs whole blocks
    with pytest.raises(ValueError, match=f"multiple of the stem factor {stem}"):
        CaptchaCNN(Settings(width=160 + 1, height=60))
    # The same size works with a stem that divides it.
    model = CaptchaCNN(Settings(width=161, height=61), ModelConfig(stem=1)).eval()
    assert model(torch.rand(1, 1, 61, 161)).shape == (1, 4 * 36)


def test_no_dropout_on_convolution_feature_maps():
    model = CaptchaCNN(Settings())
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in model.features.modules())


def test_model_config_survives_the_plain_dict_it_is_stored_as():
    config = ModelConfig(stem=1, channels=(8, 16), strides=(2, 2), hidden=32, dropout=0.0)
    stored = {**config.to_dict(), "channels": [8, 16], "strides": [2, 2], "added_later": 1}  # lists, as JSON gives them
    assert ModelConfig.from_dict(stored) == config


def test_model_pkl_round_trip_keeps_settings_config_and_outputs(tmp_path):
    settings = Settings(charset=string.digits, length=6, width=96, height=32)
    config = ModelConfig(stem=1, channels=(8, 16), strides=(2, 2), hidden=16)
    torch.manual_seed(0)
    model = CaptchaCNN(settings, config).eval()
    path = tmp_path / "model.pkl"
    save_checkpoint(path, model, {"epoch": 3, "best_accuracy": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pkl"]  # the atomic write left no temporary
    ckpt = read_checkpoint(path)
    assert {"format", "settings", "model_config", "state_dict", "meta"} <= ckpt.keys()
    assert ckpt["settings"] == settings.to_dict() and ckpt["meta"]["epoch"] == 3
    loaded, _ = load_checkpoint(path)
    assert loaded.settings == settings and loaded.config == config and not loaded.training
    x = torch.rand(2, 1, 32, 96)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_models_saved_before_the_attention_head_are_rebuilt_with_the_flat_one():
    old = {k: v for k, v in ModelConfig().to_dict().items() if k not in ("head", "head_dim")}  # as older model.pkl files hold it
    config = ModelConfig.from_dict(old)
    assert config.head == "flat" and ModelConfig().head == "attention"
    model = CaptchaCNN(Settings(), config)
    assert isinstance(model.head[-1], nn.Linear) and model.head[-1].in_features == 192 * 4 * 10  # the whole 4x10 map


def test_an_unknown_head_is_refused():
    with pytest.raises(ValueError, match="ModelConfig.head must be 'attention', 'ctc' or 'flat', not 'rnn'"):
        CaptchaCNN(Settings(), ModelConfig(head="rnn"))


def test_the_attention_head_reads_every_position_with_one_shared_classifier():
    model = CaptchaCNN(Settings()).eval()
    head = model.head
    # One classifier of (classes, dim) for all 4 positions, not one (4 * classes, map) layer.
    assert head.classify.weight.shape == (36, ModelConfig().head_dim)
    features = torch.rand(2, 192, 4, 10)
    with torch.inference_mode():
        columns = head.columns(features.flatten(1, 2))
        weights = torch.softmax(head.scores(columns) + head.position, dim=-1)
        assert weights.shape == (2, 4, 10) and torch.allclose(weights.sum(-1), torch.ones(2, 4))
        # Swapping two positions' attention swaps their logits: the reading does not depend on the position.
        pooled = torch.bmm(weights[:, [1, 0, 2, 3]], columns.transpose(1, 2))
        swapped = head.classify(pooled).view(2, 4, 36)
        plain = head(features).view(2, 4, 36)
    assert torch.allclose(swapped[:, 0], plain[:, 1], atol=1e-5) and torch.allclose(swapped[:, 1], plain[:, 0], atol=1e-5)


def test_shift_columns_moves_the_image_sideways_and_repeats_the_edge():
    x = torch.arange(6.0).view(1, 1, 1, 6)
    assert shift_columns(x, 2).flatten().tolist() == [0, 0, 0, 1, 2, 3]
    assert shift_columns(x, -2).flatten().tolist() == [2, 3, 4, 5, 5, 5]
    assert shift_columns(x, 0) is x


def test_test_shifts_average_the_views_out_of_training_only():
    torch.manual_seed(0)
    settings = Settings()
    model = CaptchaCNN(settings, ModelConfig(dropout=0.0)).eval()
    x = torch.rand(3, 1, settings.height, settings.width)
    with torch.inference_mode():
        views = [model(shift_columns(x, s)).view(3, 4, 36).log_softmax(-1) for s in (-3, 0, 3)]
        plain = model(x)
        with_test_shifts(model, 3)
        assert model.config.test_shifts == (-3, 0, 3)
        averaged = model(x)
        assert torch.allclose(with_test_shifts(copy.deepcopy(model), 0)(x), plain)
        assert torch.allclose(averaged, torch.stack(views).mean(0).flatten(1), atol=2e-6)
        # An untrained network barely reacts to a 3-pixel move, but it does react.
        assert float((averaged - plain.view(3, 4, 36).log_softmax(-1).flatten(1)).abs().max()) > 1e-4
        once = with_test_shifts(copy.deepcopy(model), 0).train()
        model.train()  # training reads each image once: the batch statistics are of the images themselves
        assert torch.allclose(model(x), once(x))
    assert ModelConfig.from_dict(ModelConfig(test_shifts=(-3, 0, 3)).to_dict()).test_shifts == (-3, 0, 3)
    with pytest.raises(ValueError, match="under 80"):
        with_test_shifts(model, 80)
