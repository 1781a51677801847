"""The label codec: text -> per-position classes -> logits -> text, fixed and variable length."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captcha_setting import Settings
from captchakit.codec import LabelCodec, LabelError

FIXED = LabelCodec(Settings())  # 4 characters from 0-9A-Z
VARIABLE = LabelCodec(Settings(charset="abc123", length=6, min_length=2))
fast = settings(max_examples=60, deadline=None)  # the machine is shared: no timing-based failures


def confident_logits(codec: LabelCodec, texts: list[str]) -> torch.Tensor:
    """What a sure network would output for `texts`: (N, length * num_classes), 12 on the right class."""
    onehot = torch.nn.functional.one_hot(codec.encode_batch(texts), codec.num_classes)  # (N, length, K)
    return onehot.float().mul(12.0).reshape(len(texts), -1)


@fast
@given(st.lists(st.text(alphabet=FIXED.charset, min_size=4, max_size=4), min_size=1, max_size=5))
def test_fixed_length_round_trip(texts):
    assert FIXED.num_classes == 36 and FIXED.pad is None
    for text in texts:
        indices = FIXED.encode(text)
        assert len(indices) == 4 and all(0 <= i < 36 for i in indices)
        assert FIXED.decode_indices(indices) == text
    decoded = FIXED.decode(confident_logits(FIXED, texts))
    assert [t for t, _ in decoded] == texts
    assert all(0.99 < conf <= 1.0 for _, conf in decoded)


@fast
@given(st.lists(st.text(alphabet="abc123", min_size=2, max_size=6), min_size=1, max_size=5))
def test_variable_length_round_trip_pads_on_the_right(texts):
    assert VARIABLE.num_classes == 7 and VARIABLE.pad == 6  # the extra "no character" class
    for text in texts:
        indices = VARIABLE.encode(text)
        assert len(indices) == 6
        assert indices[len(text) :] == [VARIABLE.pad] * (6 - len(text))
        assert VARIABLE.decode_indices(indices) == text
    assert [t for t, _ in VARIABLE.decode(confident_logits(VARIABLE, texts))] == texts


def test_encode_batch_is_one_row_per_label():
    batch = FIXED.encode_batch(["AB12", "ZZ09", "0000"])
    assert batch.dtype == torch.long and batch.shape == (3, 4)
    assert batch[0].tolist() == [10, 11, 1, 2]


def test_confidence_is_the_product_of_the_winning_probabilities():
    codec = LabelCodec(Settings(charset="01", length=2))
    # Position 1: softmax(0, ln 3) = (1/4, 3/4) -> '1' at 0.75; position 2: (ln 4, 0) -> '0' at 0.8.
    logits = torch.tensor([[0.0, float(torch.log(torch.tensor(3.0))), float(torch.log(torch.tensor(4.0))), 0.0]])
    [(text, conf)] = codec.decode(logits)
    assert text == "10" and conf == pytest.approx(0.75 * 0.8)


@pytest.mark.parametrize(
    ("codec", "label", "message"),
    [
        (FIXED, "ABC", "label 'ABC' has 3 characters, expected 4"),
        (FIXED, "ABCDE", "label 'ABCDE' has 5 characters, expected 4"),
        (FIXED, "ab1c", "label 'ab1c' has characters outside the charset: 'abc'"),
        (VARIABLE, "a", "label 'a' has 1 characters, expected 2-6"),
        (VARIABLE, "abcX", "label 'abcX' has characters outside the charset: 'X'"),
    ],
)
def test_bad_labels_are_refused_with_the_reason(codec, label, message):
    assert codec.problem(label) == message
    with pytest.raises(LabelError, match=message.replace("(", r"\(")):
        codec.encode(label)


def test_ignore_case_reads_lower_case_labels_as_upper_case():
    codec = LabelCodec(Settings(ignore_case=True))
    assert codec.problem("ab12") is None
    assert codec.encode("ab12") == FIXED.encode("AB12")


def test_a_restricted_codec_reads_only_its_charset_and_merges_the_cases():
    import torch

    from captchakit.codec import RestrictedCodec

    base = LabelCodec(Settings(charset="0123abcABC", length=2))
    logits = torch.full((1, 2, 10), -9.0)
    logits[0, 0, 9] = 3.0  # 'C' is the model's best at position 1...
    logits[0, 0, 1], logits[0, 0, 6] = 2.0, 1.9  # ...but '1' is, once 'C' may not be read; 'c' close behind
    logits[0, 1, 5], logits[0, 1, 8] = 2.0, 1.5  # position 2: 'b' and 'B', which case-blind reading adds up
    assert base.texts(logits) == ["Cb"]
    only = RestrictedCodec(base, "12b")
    assert only.texts(logits) == ["1b"]
    blind = RestrictedCodec(base, "1bc", ignore_case=True)
    assert blind.charset == "1BC" and blind.texts(logits) == ["CB"]  # 'C' + 'c' outweigh '1'
    probs = blind.probabilities(logits)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 2)) and blind.confidences(logits).item() <= 1.0
    assert RestrictedCodec(base, "1z").unknown == "z"
