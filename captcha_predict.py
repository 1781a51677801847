"""Read captchas with a trained model.

    python captcha_predict.py                      # every image in dataset/predict
    python captcha_predict.py a.png b.png somedir/ # files and folders

Prints `file<TAB>prediction<TAB>confidence` per image; where file names carry labels
(LABEL_*.png), it also says how many were read right. From Python:

    from captcha_predict import load_model, predict
    model = load_model("model.pkl")
    text, confidence = predict(model, "captcha.png")   # or model.predict(PIL image / bytes / array)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

import captcha_setting as cs
from captcha_checkpoint import load_checkpoint
from captcha_dataset import ImageError, is_image_name, label_from_name, load_image, to_tensor
from captcha_default import resolve_model
from captcha_infer import inference_module
from captcha_labels import read_labels_file
from captcha_util import UserError, add_test_shifts_arg, choose_device, positive_int, run_cli


class Prediction(NamedTuple):
    text: str
    confidence: float


class Recognizer:
    """A loaded model: `predict(image)` and `predict_batch(images)` take paths, bytes, PIL images or arrays."""

    def __init__(self, model, checkpoint: dict, device, path):
        self.model, self.checkpoint, self.device, self.path = model, checkpoint, device, Path(path)
        self.settings = model.settings
        self.codec = model.codec
        self.fast = inference_module(model)  # BatchNorm folded, channels_last: the same function, faster

    def prepare(self, image) -> np.ndarray:
        """Any supported image -> (H, W) uint8 at the model's size; raises ImageError."""
        return load_image(image, self.settings.width, self.settings.height)

    def logits(self, arrays: np.ndarray) -> torch.Tensor:
        """The backend step: (N, H, W) uint8 -> (N, length * num_classes) CPU logits (captcha_onnx overrides it)."""
        return self.fast(to_tensor(arrays).to(self.device)).cpu()

    @torch.inference_mode()
    def predict_arrays(self, arrays: np.ndarray) -> list[Prediction]:
        """(N, H, W) uint8 -> one Prediction per image."""
        return [Prediction(text, conf) for text, conf in self.codec.decode(self.logits(arrays))]

    def predict_batch(self, images, batch_size: int = 256) -> list[Prediction]:
        out: list[Prediction] = []
        images = list(images)
        for start in range(0, len(images), batch_size):
            chunk = np.stack([self.prepare(img) for img in images[start : start + batch_size]])
            out += self.predict_arrays(chunk)
        return out

    def predict(self, image) -> Prediction:
        return self.predict_batch([image])[0]


def load_model(path=cs.MODEL_PATH, device: str = "auto", test_shifts: int | None = None) -> Recognizer:
    """Load model.pkl or an exported .onnx (settings included); raises UserError if it is unusable.

    test_shifts=K also reads each image moved K pixels left and right (see --test-shifts)."""
    if Path(path).suffix.lower() == ".onnx":
        if test_shifts is not None:
            raise UserError(f"--test-shifts: {path} is an exported file; export a model.pkl trained or tested with the shifts")
        from captcha_onnx import load_onnx  # onnxruntime is an optional extra

        return load_onnx(path, device)
    dev = choose_device(device)
    model, ckpt = load_checkpoint(path, dev, test_shifts)
    return Recognizer(model, ckpt, dev, path)


def predict(model: Recognizer, image) -> Prediction:
    """(text, confidence) for one image: a path, bytes, PIL image or uint8 array."""
    return model.predict(image)


def collect_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and is_image_name(p.name))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder; pass image files or folders of them")
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict the text of captcha images with a trained model.")
    p.add_argument("paths", nargs="*", default=[cs.PREDICT_DATASET_PATH], help="image files or folders (default: %(default)s)")
    p.add_argument(
        "--model",
        default=cs.MODEL_PATH,
        help="model.pkl from captcha_train.py, or a .onnx from captcha_export.py (default: %(default)s; if missing, models/default.pkl)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default: %(default)s)")
    add_test_shifts_arg(p)
    p.add_argument("--labels", metavar="FILE", help="CSV or TSV of filename,label lines, to count how many are right")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recognizer = load_model(resolve_model(args.model), args.device, args.test_shifts)
    labels = read_labels_file(args.labels).labels if args.labels else None
    files = collect_files(args.paths)
    if not files:
        raise UserError(f"{' '.join(args.paths)}: no images found; pass image files or a folder of them")
    good, arrays, skipped = [], [], []
    for f in files:
        try:
            arrays.append(recognizer.prepare(f))
            good.append(f)
        except ImageError as err:
            skipped.append(f"{f}: not a readable image ({err})")
    if not good:  # one line that names the first bad file, not one line per file and then the error
        more = f" (and {len(skipped) - 1} more unreadable file(s))" if len(skipped) > 1 else ""
        raise UserError(f"{skipped[0]}{more}; pass PNG, JPEG or other image files")
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    labelled = right = 0
    for start in range(0, len(good), args.batch_size):
        preds = recognizer.predict_arrays(np.stack(arrays[start : start + args.batch_size]))
        for f, (text, conf) in zip(good[start : start + args.batch_size], preds, strict=True):
            print(f"{f}\t{text}\t{conf:.4f}")
            label = label_from_name(f.name) if labels is None else labels.get(f.name, "")
            if recognizer.codec.problem(label) is None:
                labelled += 1
                right += recognizer.codec.normalize(label) == text
    if labelled:
        print(f"right: {right:,} of {labelled:,} labelled images ({right / labelled:.2%})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
