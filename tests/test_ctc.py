"""The CTC head: codec targets and decoding (greedy, and at a length labels have), the head's shapes and loss, scoring, and a tiny
variable-length folder trained, tested, predicted and exported end to end; old models keep their head."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from owndata_data import draw

import captcha_export
import captcha_gen
import captcha_predict
import captcha_test
import captcha_train
from captcha_setting import Settings
from captchakit import calibrate
from captchakit.checkpoint import FORMAT, load_checkpoint, read_checkpoint
from captchakit.codec import LabelCodec, alignment, edit_distance
from captchakit.ctc import output_columns
from captchakit.ctc_paths import length_mass, path_of_length
from captchakit.data.sets import in_memory
from captchakit.evaluate import evaluate
from captchakit.model import CaptchaCNN, ModelConfig, with_test_shifts
from captchakit.report.analysis import analyze

VARIABLE = Settings(charset="abc123", length=6, min_length=2)
CODEC = LabelCodec(VARIABLE, ctc=True)
FAST = ["--epochs", "1", "--batch-size", "16", "--threads", "2"]
fast = settings(max_examples=60, deadline=None)  # the machine is shared: no timing-based failures


def perfect_path(codec: LabelCodec, text: str, columns: int, stretch: int = 2) -> list[int]:
    """A CTC path that spells `text`: each character held `stretch` columns, a blank between
    repeated characters (and before and after), blanks filling the rest."""
    path = [codec.blank]
    for i, c in enumerate(text):
        if i and text[i - 1] == c:
            path.append(codec.blank)
        path += [codec.charset.index(c)] * stretch
    path += [codec.blank] * (columns - len(path))
    assert len(path) == columns
    return path


def sure_log_probs(codec: LabelCodec, paths: list[list[int]]) -> torch.Tensor:
    """(N, T, K) log-probabilities of a network sure of each path."""
    onehot = torch.nn.functional.one_hot(torch.tensor(paths), codec.num_classes).float()
    return (onehot * 20.0).log_softmax(-1)


@fast
@given(st.lists(st.text(alphabet="abc123", min_size=2, max_size=6), min_size=1, max_size=5))
def test_targets_and_a_perfect_path_round_trip(texts):
    assert CODEC.num_classes == 7 and CODEC.blank == CODEC.pad == 6  # the blank is the padding class
    targets, lengths = CODEC.ctc_targets(CODEC.encode_batch(texts))
    assert targets.shape == (len(texts), 6) and lengths.tolist() == [len(t) for t in texts]
    decoded = CODEC.decode(sure_log_probs(CODEC, [perfect_path(CODEC, t, 24) for t in texts]))
    assert [t for t, _ in decoded] == texts
    assert all(0.99 < conf <= 1.0 for _, conf in decoded)


def test_repeats_need_a_blank_between_them():
    b, a = CODEC.blank, CODEC.charset.index("a")
    assert CODEC.collapse([b, a, a, a, b]) == "a"  # one character held over three columns
    assert CODEC.collapse([a, b, a]) == "aa"  # a blank separates a repeated character
    assert CODEC.collapse([a, a, b, b, 1, 1, a]) == "aba"
    assert perfect_path(CODEC, "aab", 10) == [b, a, a, b, a, a, 1, 1, b, b]
    fixed = LabelCodec(Settings(charset="AB", length=2), ctc=True)  # fixed length still gets its blank
    assert fixed.num_classes == 3 and fixed.blank == 2 and fixed.ctc_targets(fixed.encode_batch(["AB"]))[1].tolist() == [2]


def test_confidence_sums_every_path_that_spells_the_text():
    # Column 1: p(a) = 3/4, p(blank) = 1/24; column 2: p(blank) = 4/5, p(a) = 1/30. "a" is spelt by
    # a-blank (the best path), a-a and blank-a; the confidence is their sum, not the best path's 0.6.
    codec = LabelCodec(Settings(charset="abc123", length=6, min_length=1), ctc=True)  # labels of one character too
    logp = torch.log(torch.tensor([[[0.75] + [0.25 / 6] * 6, [0.2 / 6] * 6 + [0.8]]]))
    [(text, conf)] = codec.decode(logp)
    # Given that a label has a character, the empty reading (blank-blank, 1/24 * 4/5) is ruled out.
    assert text == "a" and conf == pytest.approx((0.75 * 0.8 + 0.75 / 30 + 1 / 24 / 30) / (1 - 0.8 / 24), rel=1e-5)
    assert codec.confidences(logp).item() == pytest.approx(conf, rel=1e-6)
    # A model calibrated before (its calibration has no "views") reads the best path, as it was fitted.
    legacy = LabelCodec(codec.settings, ctc=True, best_path=calibrate.Calibration.from_dict({"temperature": 1.0}).best_path)
    assert legacy.decode(logp)[0][1] == pytest.approx(0.75 * 0.8, rel=1e-5)
    assert not calibrate.Calibration.from_dict(calibrate.Calibration(1.0, 10, 0.1, 0.1).to_dict()).best_path
    # An empty reading: one blank column cannot spell the two characters the shortest label has.
    blank = torch.log(torch.tensor([[[0.1 / 6] * 6 + [0.9]]]))
    assert CODEC.decode(blank)[0][0] == "" and CODEC.confidences(blank).item() == pytest.approx(0.9, rel=1e-5)


def test_a_reading_of_a_length_no_label_has_is_read_again_at_a_length_labels_have():
    fixed = LabelCodec(Settings(charset="abc", length=3), ctc=True)
    a, b, c, blank = 0, 1, 2, fixed.blank
    # Best classes a b c - c -: "abcc". The last c is a near tie with the blank, so the best path of
    # three characters blanks it (a factor 0.45 / 0.5) rather than the fourth column's blank (0.05 / 0.9).
    rows = [[0.9, 0.03, 0.03, 0.04], [0.03, 0.9, 0.03, 0.04], [0.03, 0.03, 0.9, 0.04]]
    rows += [[0.02, 0.03, 0.05, 0.9], [0.02, 0.03, 0.5, 0.45], [0.03, 0.03, 0.04, 0.9]]
    logp = torch.tensor([rows]).log()
    assert fixed.collapse(logp[0].argmax(-1).tolist()) == "abcc"
    [(text, conf)] = fixed.decode(logp)
    # Its confidence: the probability of "abc" given that the text has three characters.
    logp = fixed.log_probabilities(logp)
    spelt, three = fixed.spelled(logp, ["abc"]).item(), fixed.in_lengths(logp).item()
    assert text == "abc" and three < 1 and conf == pytest.approx(spelt / three)
    assert path_of_length(logp[0].numpy(), blank, 3, 3) == [a, b, c, blank, blank, blank]
    assert path_of_length(logp[0, :2].numpy(), blank, 3, 3) is None  # two columns cannot spell three characters


@fast
@given(st.integers(1, 4), st.integers(2, 3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 10_000))
def test_the_best_path_of_a_length_is_the_best_of_every_path(columns, classes, shortest, extra, seed):
    logp = torch.randn(columns, classes, generator=torch.Generator().manual_seed(seed)).log_softmax(-1).double().numpy()
    blank, codec = classes - 1, LabelCodec(Settings(charset="ab"[: classes - 1], length=shortest + extra, min_length=shortest), ctc=True)
    spelt = [p for p in itertools.product(range(classes), repeat=columns) if shortest <= len(codec.collapse(list(p))) <= shortest + extra]
    found = path_of_length(logp, blank, shortest, shortest + extra)
    mass = length_mass(torch.from_numpy(logp)[None], blank, shortest, shortest + extra).item()
    assert mass == pytest.approx(sum(math.exp(logp[range(columns), p].sum()) for p in spelt), abs=1e-6)
    if not spelt:
        assert found is None
        return
    assert shortest <= len(codec.collapse(found)) <= shortest + extra
    assert logp[range(columns), found].sum() == pytest.approx(max(logp[range(columns), p].sum() for p in spelt))


def test_edit_distance_and_the_texts_laid_over_the_truth():
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "ab") == 2 and edit_distance("ab", "ab") == 0
    assert alignment("abc", "ac") == [(0, 0), (1, None), (2, 1)]
    pad, idx = CODEC.pad, CODEC.charset.index
    assert CODEC.aligned("abc1", "ac1") == [idx("a"), pad, idx("c"), idx("1"), pad, pad]  # "b" dropped where it stood
    assert CODEC.aligned("ab", "ab3") == [idx("a"), idx("b"), idx("3"), pad, pad, pad]  # an extra one after the end
    assert CODEC.aligned("ab", "2b") == [idx("2"), idx("b"), pad, pad, pad, pad]


def test_the_ctc_head_gives_log_probabilities_per_column():
    s = Settings(charset="0123456789abcdefghijklmnopqrstuvwxyz", length=6, min_length=4)
    model = CaptchaCNN(s, ModelConfig(head="ctc")).eval()
    assert model.codec.ctc and model.codec.num_classes == 37
    with torch.inference_mode():
        out = model(torch.rand(3, 1, s.height, s.width))
    # 160 wide: 10 columns in the last map, 2 outputs each: 20 >= 2 * 6 + 1 columns.
    assert out.shape == (3, 20, 37) and output_columns(10, 6, 0) == 2
    assert torch.allclose(out.exp().sum(-1), torch.ones(3, 20), atol=1e-5)
    assert output_columns(4, 5, 0) == 3 and output_columns(10, 6, 4) == 4  # narrow maps get more; a given split wins
    plain = CaptchaCNN(s, ModelConfig(head="ctc", ctc_recurrent=False, ctc_split=1)).eval()
    assert plain.head.context is None and plain(torch.rand(2, 1, s.height, s.width)).shape == (2, 10, 37)


def test_the_loss_is_chosen_by_the_head():
    torch.manual_seed(0)
    ctc = CaptchaCNN(VARIABLE.with_(width=96, height=32), ModelConfig(head="ctc"))
    targets = CODEC.encode_batch(["ab", "a1b2c3"])
    sure = sure_log_probs(CODEC, [perfect_path(CODEC, t, 18) for t in ["ab", "a1b2c3"]])
    assert float(ctc.loss(sure, targets)) < 1e-3  # a sure, right network has nothing to learn
    wrong = sure_log_probs(CODEC, [perfect_path(CODEC, t, 18) for t in ["ba", "a1b2c1"]])
    assert float(ctc.loss(wrong, targets, reduction="sum")) == pytest.approx(12 * float(ctc.loss(wrong, targets)), rel=1e-5)
    attention = CaptchaCNN(Settings())  # the position heads: the cross-entropy the loop always used, bit for bit
    logits, y = torch.randn(4, 4 * 36), torch.randint(0, 36, (4, 4))
    want = torch.nn.functional.cross_entropy(logits.view(-1, 36).float(), y.view(-1), label_smoothing=0.1)
    assert torch.equal(attention.loss(logits, y, 0.1), want)


def test_test_shifts_are_refused_for_ctc():
    model = CaptchaCNN(VARIABLE.with_(width=96, height=32), ModelConfig(head="ctc"))
    assert with_test_shifts(model, 0).config.test_shifts == (0,)
    with pytest.raises(ValueError, match="a CTC model reads each image once"):
        with_test_shifts(model, 3)
    with pytest.raises(ValueError, match="a CTC model reads each image once"):
        CaptchaCNN(VARIABLE.with_(width=96, height=32), ModelConfig(head="ctc", test_shifts=(-3, 0, 3)))


class SureModel(torch.nn.Module):
    """Stands in for a network: always reads the given texts, whatever the images."""

    def __init__(self, texts: list[str]):
        super().__init__()
        self.model = CaptchaCNN(VARIABLE.with_(width=96, height=32), ModelConfig(head="ctc"))
        self.codec, self.texts = self.model.codec, texts

    def forward(self, x):
        return sure_log_probs(self.codec, [perfect_path(self.codec, t, 18) for t in self.texts[: len(x)]])

    def loss(self, *args, **kwargs):
        return self.model.loss(*args, **kwargs)


def test_evaluate_scores_ctc_on_the_decoded_texts():
    labels, read = ["abc", "ab12", "a1b"], ["abc", "a12", "a1b2"]  # one right, one dropped, one extra
    data = in_memory("t", torch.zeros(3, 32, 96, dtype=torch.uint8).numpy(), ["x", "y", "z"], labels)
    result = evaluate(SureModel(read), data, "cpu", keep_predictions=True)
    assert result.accuracy == pytest.approx(1 / 3)
    assert result.char_accuracy == pytest.approx(1 - 2 / 10)  # 1 - edit distance / true characters
    assert [p[2] for p in result.predictions] == read
    analysis = analyze(CODEC, labels, result.guesses, [p[3] for p in result.predictions], read)
    assert sorted(analysis.errors) == [1, 2]  # the extra character counts though no position shows it
    assert ("b", "(none)", 1) in analysis.confusions()


def test_captcha_gen_draws_labels_of_every_length_from_min_length(tmp_path, cli):
    small = ["--charset", "ABC123", "--width", "64", "--height", "32", "--test", "0", "--predict", "0", "--workers", "1"]
    code, out, _ = cli(captcha_gen.main, "--train", "16", "--length", "5", "--min-length", "3", "--out", tmp_path, "--seed", "1", *small)
    lengths = {len(p.name.split("_")[0]) for p in (tmp_path / "train").glob("*.png")}
    assert code == 0 and "3-5 characters" in out and lengths <= {3, 4, 5} and len(lengths) > 1
    code, _, err = cli(captcha_gen.main, "--train", "1", "--length", "4", "--min-length", "5", "--out", tmp_path, *small)
    assert code == 2 and "--min-length 5: min_length must be between 1 and length" in err


@pytest.fixture(scope="module")
def variable(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ctc_variable")
    draw(folder, 60, Settings(charset="ABC123", length=5, min_length=3, width=64, height=32), seed=4)
    return folder


@pytest.fixture(scope="module")
def ctc_model(variable, tmp_path_factory):
    model = tmp_path_factory.mktemp("ctc_model") / "m.pkl"
    code = captcha_train.main(["--train-dir", str(variable), "--val-split", "0.2", "--model", str(model), *FAST])
    assert code == 0
    return model


def test_variable_length_sets_train_the_ctc_head_and_every_script_reads_it(ctc_model, variable, cli, tmp_path):
    assert read_checkpoint(ctc_model)["model_config"]["head"] == "ctc"
    code, out, _ = cli(captcha_test.main, "--model", ctc_model, "--data", variable)
    assert code == 0 and "captchas" in out
    code, out, _ = cli(captcha_predict.main, "--model", ctc_model, variable)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 60 and all(set(line.split("\t")[1]) <= set("ABC123") for line in lines)
    code, err_out, err = cli(captcha_test.main, "--model", ctc_model, "--data", variable, "--test-shifts", "3")
    assert code == 2 and "a CTC model reads each image once" in err and len(err.strip().splitlines()) == 1
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "m.onnx"
    assert cli(captcha_export.main, "--model", ctc_model, "--onnx", onnx_path)[0] == 0
    code, onnx_out, _ = cli(captcha_predict.main, "--model", onnx_path, variable)
    assert code == 0 and [x.split("\t")[1] for x in onnx_out.strip().splitlines()] == [x.split("\t")[1] for x in lines]


def test_a_named_head_wins_and_fixed_length_sets_keep_the_attention_head(variable, tmp_path, cli):
    chosen = tmp_path / "attention.pkl"
    given = json.dumps({"head": "attention"})
    assert cli(captcha_train.main, "--train-dir", variable, "--val-split", "0.2", "--model", chosen, "--model-config", given, *FAST)[0] == 0
    assert read_checkpoint(chosen)["model_config"]["head"] == "attention"
    fixed = tmp_path / "fixed"
    draw(fixed, 30, Settings(charset="ABC123", length=4, width=64, height=32), seed=5)
    plain = tmp_path / "fixed.pkl"
    code, out, _ = cli(captcha_train.main, "--train-dir", fixed, "--val-split", "0.2", "--model", plain, *FAST)
    assert code == 0 and "CTC" not in out and read_checkpoint(plain)["model_config"]["head"] == "attention"


def test_position_heads_save_three_views_ctc_reads_once_and_a_refused_shift_stops_before_training(ctc_model, variable, tmp_path, cli):
    assert tuple(read_checkpoint(ctc_model)["model_config"]["test_shifts"]) == (0,)
    fixed = tmp_path / "fixed"
    draw(fixed, 30, Settings(charset="ABC123", length=4, width=64, height=32), seed=5)
    viewed, once = tmp_path / "viewed.pkl", tmp_path / "once.pkl"
    code, out, _ = cli(captcha_train.main, "--train-dir", fixed, "--val-split", "0.2", "--model", viewed, *FAST)
    ckpt = read_checkpoint(viewed)
    assert code == 0 and tuple(ckpt["model_config"]["test_shifts"]) == (-3, 0, 3)
    assert "read with views moved 3 pixels left and right" in out and "one_view_accuracy" in ckpt["meta"]
    assert cli(captcha_train.main, "--train-dir", fixed, "--val-split", "0.2", "--model", once, "--test-shifts", "0", *FAST)[0] == 0
    assert tuple(read_checkpoint(once)["model_config"]["test_shifts"]) == (0,) and "one_view_accuracy" not in read_checkpoint(once)["meta"]
    refused = tmp_path / "refused.pkl"
    code, out, err = cli(captcha_train.main, "--train-dir", variable, "--val-split", "0.2", "--model", refused, "--test-shifts", "3", *FAST)
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and err.strip().endswith(
            "error: --test-shifts 3: a CTC model reads each image once (shifted views do not align column by column); leave it out or use 0"
        )
    )
    assert "epoch 1/1" not in out and not refused.exists()


def test_old_model_files_keep_their_head(tmp_path):
    old = {k: v for k, v in ModelConfig().to_dict().items() if not k.startswith("ctc_")}  # as files before CTC hold it
    assert ModelConfig.from_dict(old).head == "attention"
    assert ModelConfig.from_dict({k: v for k, v in old.items() if k != "head"}).head == "flat"
    settings = Settings(charset="ABC", length=4, min_length=2, width=64, height=32)
    model = CaptchaCNN(settings, ModelConfig.from_dict(old))
    assert not model.codec.ctc and model.codec.pad == 3  # the variable-length pad scheme, as saved
    path = tmp_path / "old.pkl"
    torch.save({"format": FORMAT, "settings": settings.to_dict(), "model_config": old, "state_dict": model.state_dict()}, path)
    loaded, _ = load_checkpoint(path)
    x = torch.rand(2, 1, 32, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model.eval()(x)) and loaded.config.head == "attention"
    assert load_checkpoint(path, test_shifts=3)[0].config.test_shifts == (-3, 0, 3)  # shifts stay for position heads
