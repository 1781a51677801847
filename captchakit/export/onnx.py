"""ONNX: export a trained model for onnxruntime, and run such a file behind the Recognizer API.

    python captcha_export.py --model model.pkl --onnx model.onnx
    python captcha_predict.py --model model.onnx captcha.png

The .onnx file stands alone: the settings (charset, length, image size), the model config
and a summary of the training meta are stored in its metadata_props, so reading it needs no
flags. Input `image`: (N, C, H, W) float32 in [0, 1] (C 1 grey, 3 RGB: the settings' channels),
exactly what CaptchaCNN takes (images are prepared by captchakit.data.images.load_image with the
settings stored in the file, as for the PyTorch model); output `logits`:
(N, length * num_classes), or for a CTC model (N, T, num_classes) per-column log-probabilities
that captchakit.codec decodes; N is free. onnx and onnxruntime are an optional extra
(pyproject.toml's onnx extra): they are imported here only, and only when an ONNX file is used.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from captchakit.calibrate import Calibration
from captchakit.codec import LabelCodec
from captchakit.errors import UserError
from captchakit.files import atomic_path
from captchakit.recognizer import Recognizer
from captchakit.settings import Settings

FORMAT = "captcha-toolkit-onnx/1"
OPSET = 17  # read by every onnxruntime release of the last years
INPUT, OUTPUT = "image", "logits"
TOLERANCE = 1e-3  # largest |logit difference| accepted between onnxruntime and PyTorch
META_KEYS = ("epoch", "epochs", "best_accuracy", "val_accuracy", "val_char_accuracy", "train_images", "train_dir", "elapsed_s", "torch")
INSTALL = 'pip install -e ".[onnx]"'  # pyproject.toml's onnx extra, as README.md says


def require(module: str, what: str):
    """Import an optional ONNX package, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what}: needs the optional package {module}; {INSTALL}") from None


def metadata(model, ckpt: dict) -> dict[str, str]:
    """What a reader of the .onnx file needs besides the graph, as metadata_props strings."""
    s = model.settings
    meta = {k: v for k, v in ckpt.get("meta", {}).items() if k in META_KEYS}
    return {
        "format": FORMAT,
        "charset": s.charset,
        "settings": json.dumps(s.to_dict()),
        "model_config": json.dumps(model.config.to_dict()),
        "meta": json.dumps(meta),
        "calibration": json.dumps(ckpt.get("calibration")),  # the temperature the reader applies to the output
        "confidence": "with p = softmax(output / calibration.temperature): the product over positions of the largest p; "
        "CTC: the probability of the text read under p summed over every column path that spells it (the CTC forward "
        "pass), or the best path's product where calibration has no 'views' key (fitted before); temperature 1 when "
        "calibration is null",
        "input": f"{INPUT}: (N, {s.channels}, {s.height}, {s.width}) float32, {'RGB' if s.channels == 3 else 'grey'} in [0, 1], "
        f"prepared by captcha_dataset.load_image{' with keep_aspect' if s.keep_aspect else ''}",
        "output": output_text(model),
    }


def output_text(model) -> str:
    """The metadata's description of the output: what the codec reads back."""
    k = model.codec.num_classes
    if model.codec.ctc:
        return (
            f"{OUTPUT}: (N, T, {k}) log-probabilities per image column, class {model.codec.blank} the CTC blank; "
            "greedy CTC decoding; a text of a length outside the settings' is read as the best column path of a length inside"
        )
    return f"{OUTPUT}: (N, {model.settings.length} * {k}) logits, one softmax block per character position"


def export_onnx(model, ckpt: dict, path, opset: int = OPSET) -> float | None:
    """Write `model` as an ONNX file with a free batch size; atomic.

    The file is checked by onnx.checker and, where onnxruntime is installed, run against PyTorch
    before it replaces `path`. Returns that max |logit difference| (None without onnxruntime).
    """
    onnx = require("onnx", f"--onnx {path}")
    model = model.cpu().eval()
    s = model.settings
    sample = torch.rand(2, s.channels, s.height, s.width)
    with atomic_path(path, ".onnx") as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no extra package (the new one needs
            # onnxscript); it folds BatchNorm into the convolutions and drops Dropout.
            warnings.simplefilter("ignore", DeprecationWarning)
            # The CTC head's GRU: tracing its Python shape checks warns, and the exporter fears a
            # fixed batch size, but the exported initial state takes its size from the input.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1")
            torch.onnx.export(
                model,
                (sample,),
                tmp,
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(tmp)
        for key, value in metadata(model, ckpt).items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        proto.doc_string = f"captcha-toolkit CNN: {s.describe()}"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, tmp)
        diff = compare_with_torch(model, tmp)
        if diff is not None and diff > TOLERANCE:
            raise UserError(f"--onnx {path}: onnxruntime's logits differ from PyTorch's by {diff:.2g}; try another --opset")
    return diff


def compare_with_torch(model, path) -> float | None:
    """Max |logit difference| of onnxruntime vs PyTorch on a few random images; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    s = model.settings
    x = torch.rand(8, s.channels, s.height, s.width, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
    with torch.inference_mode():
        want = model(x).numpy()
    return float(np.abs(got - want).max())


def session_options(ort):
    """Full graph optimisation (fuses Conv+ReLU); one thread per core, no spinning between calls.

    Spinning (onnxruntime's default) keeps idle threads busy-waiting for the next call: they take
    the cores from anything else running there (a server's event loop, another process), and every
    call waits for them. Measured speeds: docs/BENCHMARKS.md, "Inference speed".
    """
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def open_session(path, device: str = "auto"):
    """(onnxruntime session, metadata dict) for an exported file; a one-line error if unusable."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--model {path}: file not found; export one with `python captcha_export.py --onnx {path}`")
    ort = require("onnxruntime", f"--model {path}")
    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), session_options(ort), providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"--model {path}: not a readable ONNX model ({reason}); export it again") from None
    props = session.get_modelmeta().custom_metadata_map
    if props.get("format") != FORMAT:
        raise UserError(f"--model {path}: an ONNX file without captcha-toolkit metadata; export it with captcha_export.py")
    return session, props


def onnx_input(arrays: np.ndarray) -> np.ndarray:
    """(N, H, W) or colour (N, H, W, 3) uint8 -> the (N, C, H, W) float32 in [0, 1] an exported model takes, as to_tensor."""
    planes = arrays[:, None] if arrays.ndim == 3 else arrays.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(planes, dtype=np.float32) / np.float32(255)


class OnnxRecognizer(Recognizer):
    """Same API and results as the PyTorch Recognizer; only the logits come from onnxruntime."""

    def __init__(self, session, props: dict, path):
        self.session, self.metadata, self.path = session, props, Path(path)
        self.model, self.checkpoint, self.device = None, None, "cpu"
        self.settings = Settings.from_dict(json.loads(props["settings"]))
        self.calibration = Calibration.from_dict(json.loads(props.get("calibration", "null")))
        ctc = json.loads(props.get("model_config", "{}")).get("head") == "ctc"
        self.codec = LabelCodec(self.settings, ctc=ctc, temperature=self.calibration.temperature, best_path=self.calibration.best_path)

    def logits(self, arrays: np.ndarray):
        """(N, H, W[, 3]) uint8 -> (N, length * num_classes) logits (CTC: (N, T, num_classes) log-probs) as a CPU tensor."""
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: onnx_input(arrays)})[0])


def load_onnx(path, device: str = "auto") -> OnnxRecognizer:
    """A Recognizer (captchakit.api's load_model gives it for an .onnx) that runs the ONNX file with onnxruntime."""
    session, props = open_session(path, device)
    return OnnxRecognizer(session, props, path)
