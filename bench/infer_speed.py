"""Inference speed on the CPU: single-image latency and batched throughput, PyTorch and ONNX.

    flock /tmp/bench.lock python bench/infer_speed.py [--model model.pkl]

Prints one JSON line with torch_latency_ms, torch_img_per_s, onnx_latency_ms, onnx_img_per_s,
and onnx_int8_latency_ms, onnx_int8_img_per_s for the int8 twin (captcha_export.py --int8).

What is timed, through the public API (recognizer.load_model) of each runtime:
- latency: the median over --calls calls of `model.predict(image)`, `image` being a decoded
  160x60 RGB PIL image (a captcha as the generator draws it). One call covers load_image
  (grey conversion, resize when needed), the float tensor, the forward pass and decoding to
  a Prediction; reading and PNG-decoding a file is not included.
- throughput: images/s of `model.predict_arrays(batch)` on --batch images already prepared as
  (N, H, W) uint8 (what load_image returns, or the packed cache holds), for --seconds: the
  float tensor, the forward pass and decoding.
The model is --model (default model.pkl, else the shipped captchakit/models/default.pkl); its ONNX and
int8 ONNX twins are exported to a temporary folder unless --onnx / --onnx-int8 are given.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from _common import BENCH_SEED, emit

import captcha_setting as cs
from captchakit.api import load_model
from captchakit.checkpoint import load_checkpoint
from captchakit.data.synth import captchas
from captchakit.errors import run_cli
from captchakit.export.onnx import export_onnx
from captchakit.export.quant import calibration_images, quantize_onnx
from captchakit.shipped import resolve_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Time single-image latency and batched throughput of PyTorch and ONNX inference.")
    p.add_argument("--model", default=cs.MODEL_PATH, help="model.pkl to time (default: %(default)s, else captchakit/models/default.pkl)")
    p.add_argument("--onnx", default=None, help="its exported .onnx (default: export one to a temporary folder)")
    p.add_argument("--onnx-int8", default=None, help="its int8 export (default: quantize one to a temporary folder)")
    p.add_argument("--calls", type=int, default=2000, help="single-image calls per runtime; the median is reported (default: %(default)s)")
    p.add_argument("--batch", type=int, default=256, help="images per batched call (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="time spent on batched calls per runtime (default: %(default)s)")
    p.add_argument("--images", type=int, default=256, help="distinct generated captchas the calls cycle through (default: %(default)s)")
    return p


def latency_ms(recognizer, images, calls: int) -> float:
    for image in images[:20]:  # warm-up: the first calls pick kernels and allocate
        recognizer.predict(image)
    times = []
    for i in range(calls):
        image = images[i % len(images)]
        start = time.perf_counter()
        recognizer.predict(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def img_per_s(recognizer, batch: np.ndarray, seconds: float) -> float:
    recognizer.predict_arrays(batch)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        recognizer.predict_arrays(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx
        model, ckpt = load_checkpoint(path, "cpu")  # read once for both exports
        if onnx_path is None:
            onnx_path = Path(tmp) / "model.onnx"
            export_onnx(model, ckpt, onnx_path)
        int8_path = args.onnx_int8
        if int8_path is None:
            int8_path = Path(tmp) / "int8.onnx"
            quantize_onnx(model, ckpt, onnx_path, int8_path, calibration_images(model))
        runtimes = {"torch": load_model(path, "cpu"), "onnx": load_model(onnx_path, "cpu"), "onnx_int8": load_model(int8_path, "cpu")}
        settings = runtimes["torch"].settings
        images = [image for _, image in captchas(settings, args.images, BENCH_SEED, "bench")]  # the same on every run
        prepared = np.stack([runtimes["torch"].prepare(img) for img in images])
        batch = np.resize(prepared, (args.batch, settings.height, settings.width))  # cycles through the images
        record = {}
        for name, recognizer in runtimes.items():
            record[f"{name}_latency_ms"] = round(latency_ms(recognizer, images, args.calls), 3)
            record[f"{name}_img_per_s"] = round(img_per_s(recognizer, batch, args.seconds))
    record.update(model=str(path), batch=args.batch, threads=torch.get_num_threads(), torch=torch.__version__)
    record.update(onnxruntime=onnxruntime.__version__)
    emit(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
