"""Serve a trained model over HTTP: a JSON API, the classic /b endpoint and a web page.

    python captcha_server.py --model model.pkl --host 127.0.0.1 --port 9999
    curl -F image=@captcha.png http://127.0.0.1:9999/predict

The model is loaded once. Requests are decoded on the event loop and the model runs on one
worker thread; images from requests that arrive while it is busy are run together as one
batch, so concurrent clients share forward passes instead of queueing behind each other.
Endpoints and bad-input answers are described in README.md ("Serve it over HTTP") and at
/docs (the OpenAPI description, also as /openapi.json).
"""

from __future__ import annotations

import argparse
import time

from captchakit import settings as cs
from captchakit.cli import add_min_confidence_arg
from captchakit.errors import UserError, run_cli
from captchakit.files import check_writable_dir
from captchakit.serve.app import MAX_BATCH, bind, create_app, stop_signals_end_normally
from captchakit.shipped import resolve_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve a trained captcha model over HTTP: JSON API, /b, a web page at /, docs at /docs.")
    p.add_argument(
        "--model", default=cs.MODEL_PATH, help="model made by captcha_train.py (default: %(default)s, else captchakit/models/default.pkl)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 opens it to the network (default: %(default)s)")
    p.add_argument("--port", type=int, default=9999, help="TCP port; 0 picks a free one and prints it (default: %(default)s)")
    p.add_argument("--max-bytes", type=int, default=1 << 20, help="largest request body accepted, in bytes (default: %(default)s = 1 MiB)")
    p.add_argument("--max-images", type=int, default=MAX_BATCH, help="most images in one request (default: %(default)s)")
    p.add_argument("--save-dir", default=None, help="keep every upload here under a generated name (default: keep nothing)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the model; 0 keeps torch's default (default: %(default)s)")
    add_min_confidence_arg(p)
    p.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs throughput)")
    return p


def check_args(args) -> None:
    if args.max_bytes < 1:
        raise UserError(f"--max-bytes {args.max_bytes}: must be at least 1")
    if args.max_images < 1:
        raise UserError(f"--max-images {args.max_images}: must be at least 1")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a TCP port; use 1-65535, or 0 for any free one")
    if args.save_dir:
        check_writable_dir(args.save_dir, "--save-dir")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    # Here, not at the top: --help and a bad flag answer without loading torch and the model code.
    import torch
    import uvicorn

    from captchakit.api import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    sock = bind(args.host, args.port)
    try:
        model = resolve_model(args.model)
        recognizer = load_model(model, args.device)
    except BaseException:
        sock.close()
        raise
    app = create_app(recognizer, args.max_bytes, args.max_images, args.save_dir, args.min_confidence)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model} on http://{shown}:{port}/ (API docs at /docs; Ctrl+C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=args.access_log, server_header=False)
    with stop_signals_end_normally():
        uvicorn.Server(config).run(sockets=[sock])
    service = app.state.service
    print(f"stopped: served {service.served} images in {time.time() - service.started:.0f} s", flush=True)
    return 0


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
