"""Label a folder of captchas by hand on a local web page, with a model's reading typed in.

    python captcha_label.py my_captchas/                 # opens the page in a browser
    python captcha_label.py my_captchas/ --no-browser    # prints its URL only

The page shows the folder's unlabelled images one by one, least confident first, with the model's
reading in the text box: Enter accepts it, typing replaces it, Tab skips the image, Esc marks it
unreadable, Shift+Tab goes back. Every answer is saved at once to DIR/labels.csv (unreadable images
to DIR/unreadable.txt), so a restart goes on where it stopped. Alt+T retrains on the labels so far
in the background (DIR/label_model.pkl) and sorts the rest by the new model's readings. Train on the
labels with (a folder's own labels.csv is read without --labels)

    python captcha_train.py --train-dir my_captchas
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import webbrowser
from pathlib import Path

from captchakit.cli import positive_int
from captchakit.errors import UserError, run_cli
from captchakit.label.store import LabelStore

TRAIN_SCRIPT = Path(__file__).resolve().with_name("captcha_train.py")  # installed beside this script, as a py-module


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Label a folder of captchas on a local web page, with a model's reading typed in.")
    p.add_argument("folder", metavar="DIR", help="folder of captcha images; the answers go to DIR/labels.csv and DIR/unreadable.txt")
    p.add_argument(
        "--model",
        default=None,
        help="model whose reading is typed in: a model.pkl or .onnx, or 'none' to type every label "
        "(default: DIR/label_model.pkl from an earlier retraining, else model.pkl, else captchakit/models/default.pkl)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default: %(default)s); the URL is printed")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; only print the page's URL")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps, to read and retrain on (default: auto)"
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of each retraining (default: what captcha_train.py chooses for the number of labels)",
    )
    return p


def open_browser(url: str) -> None:
    """Open the page without waiting for the browser. On a Linux machine without a display, webbrowser would
    start a text browser in this terminal, on top of the server's output: there the URL alone is printed."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a TCP port; use 1-65535, or 0 for any free one")
    store = LabelStore(args.folder)
    # Here, not at the top: --help and a wrong folder answer without loading torch and the web stack.
    import uvicorn

    from captchakit.label.app import create_app
    from captchakit.label.reading import Reader, choose_model
    from captchakit.label.retrain import Retrainer
    from captchakit.serve.app import bind, stop_signals_end_normally

    sock = bind(args.host, args.port)
    try:
        reader = Reader(choose_model(args.model, store.folder), args.device)
        print(f"reading {len(store.todo()):,} image(s) with {reader.describe()}", file=sys.stderr, flush=True)
        reader.apply(store)
    except BaseException:
        sock.close()
        raise
    retrainer = Retrainer(store, [sys.executable, str(TRAIN_SCRIPT)], args.device, args.epochs, reader.path)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    counts = store.counts()
    print(f"labelling {store.folder} on {url} ({counts['remaining']:,} of {counts['images']:,} to go; Ctrl+C stops)", flush=True)
    if not args.no_browser:
        open_browser(url)
    config = uvicorn.Config(create_app(store, retrainer), log_level="warning", access_log=False, server_header=False)
    try:
        with stop_signals_end_normally():
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        retrainer.stop()
    counts = store.counts()
    print(f"stopped: {counts['labelled']:,} labelled, {counts['unreadable']:,} unreadable, {counts['remaining']:,} to go", flush=True)
    print(f"train on them: python captcha_train.py --train-dir {store.folder} --labels {store.labels_path}", flush=True)
    return 0


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
