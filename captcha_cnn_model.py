"""The network: where a reader looks for it. The one definition is in captchakit/model.py.

from captcha_cnn_model import CaptchaCNN, ModelConfig
model = CaptchaCNN(Settings(), ModelConfig())   # (N, 1, 60, 160) -> (N, 4 * 36) logits
"""

from captchakit.model import AttentionHead, CaptchaCNN, ModelConfig, count_parameters  # noqa: F401
