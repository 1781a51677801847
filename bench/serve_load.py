"""Load test of captcha_server.py on loopback: requests/s and latency at a fixed concurrency.

    flock /tmp/bench.lock python bench/serve_load.py [--model model.pkl] [--seconds 30] [--concurrency 8]

Starts the server (`captcha_server.py --host 127.0.0.1 --port 0`), then keeps --concurrency
keep-alive connections busy for --seconds, each sending single-image multipart POST /predict
requests, cycling through --images seeded captchas PNG-encoded as the generator draws them.
Prints one JSON line: requests, rps, p50_ms, p99_ms, errors (a non-200 answer, an answer
without the expected JSON, or a dropped connection), after --warmup seconds not counted.

The client is a few lines of asyncio streams rather than a general HTTP library: client and
server share the same two cores, and a lighter client leaves them to the server being measured.
Every request is timed from the first byte written to the last byte of the answer read.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import statistics
import subprocess
import sys
import time

from _common import BENCH_SEED, ROOT, emit

import captcha_setting as cs
from captcha_setting import Settings
from captchakit.checkpoint import read_checkpoint
from captchakit.data.synth import captchas
from captchakit.errors import run_cli
from captchakit.shipped import resolve_model

BOUNDARY = "----captchabench"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Load-test captcha_server.py on loopback and print requests/s, p50, p99 and errors.")
    p.add_argument("--model", default=cs.MODEL_PATH, help="model to serve (default: %(default)s, else captchakit/models/default.pkl)")
    p.add_argument("--seconds", type=float, default=30.0, help="measured duration (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring starts (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, help="connections, each with one request in flight (default: %(default)s)")
    p.add_argument("--images", type=int, default=64, help="distinct captchas the requests cycle through (default: %(default)s)")
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for captcha_server.py, repeatable (e.g. --threads=2)")
    return p


def request_bytes(png: bytes) -> bytes:
    """One keep-alive multipart POST /predict carrying `png` in the `image` field."""
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="c.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def captcha_pngs(settings: Settings, count: int) -> list[bytes]:
    """`count` seeded captchas as PNG files: the same requests on every run."""
    out = []
    for _, image in captchas(settings, count, BENCH_SEED, "bench"):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def start_server(model, extra: list[str]) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, str(ROOT / "captcha_server.py"), "--model", str(model), "--host", "127.0.0.1", "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not found:
        proc.kill()
        raise SystemExit(f"serve_load: the server did not start: {line.strip()}")
    return proc, int(found[1])


async def one_request(reader, writer, request: bytes) -> bool:
    """Send `request`, read the whole answer; True for a 200 with a prediction in it."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
    body = await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200") and body.startswith(b'{"text":')


async def worker(port: int, requests: list[bytes], offset: int, start_at: float, stop_at: float, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    while (now := time.perf_counter()) < stop_at:
        try:
            ok = await one_request(reader, writer, requests[i % len(requests)])
        except (OSError, asyncio.IncompleteReadError, TypeError, ValueError):
            ok = False
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if now >= start_at:
            latencies.append(time.perf_counter() - now)
            if not ok:
                errors.append(i)
        i += 1
    writer.close()


async def load(port: int, requests: list[bytes], concurrency: int, warmup: float, seconds: float):
    latencies: list[float] = []
    errors: list[int] = []
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    jobs = [worker(port, requests, k * 7, start_at, stop_at, latencies, errors) for k in range(concurrency)]
    await asyncio.gather(*jobs)
    return latencies, len(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = resolve_model(args.model)
    settings = Settings.from_dict(read_checkpoint(model)["settings"])
    requests = [request_bytes(png) for png in captcha_pngs(settings, args.images)]
    proc, port = start_server(model, args.server_arg)
    try:
        latencies, errors = asyncio.run(load(port, requests, args.concurrency, args.warmup, args.seconds))
    finally:
        proc.terminate()
        proc.wait(30)
    ms = sorted(t * 1000 for t in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
    emit(
        {
            "bench": "serve_load",
            "requests": len(ms),
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "rps": round(len(ms) / args.seconds, 1),
            "p50_ms": round(statistics.median(ms), 2) if ms else None,
            "p99_ms": round(p99, 2),
            "errors": errors,
            "model": str(model),
            "server_args": args.server_arg,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
