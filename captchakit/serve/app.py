"""The HTTP app around a loaded model: the JSON API (/predict), the classic /b endpoint, /health and a web page.

The model is loaded once (captcha_server.py). Requests are decoded on the event loop and the
model runs on one worker thread; images from requests that arrive while it is busy are run
together as one batch (`Batcher`), so concurrent clients share forward passes instead of
queueing behind each other. Request bodies are parsed and checked in serve/input.py, the
OpenAPI descriptions of the bodies and answers are in serve/schema.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from captchakit.errors import UserError
from captchakit.serve.input import BadInput, BodyLimit, Upload, from_form, from_json, is_raw, media_type, unsupported
from captchakit.serve.schema import CLASSIC_BODY, ERRORS, PREDICT_BODY, Classic, Health, Prediction

PAGE = Path(__file__).resolve().parents[1] / "web" / "index.html"
MAX_BATCH = 64  # images per forward pass when requests pile up
INLINE_DECODE_BYTES = 64_000  # bigger uploads are decoded on a thread so the event loop stays free
log = logging.getLogger("captcha_server")


class Batcher:
    """Runs the recognizer on one thread, batching the images of requests that wait together."""

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.pending: list[tuple[list, asyncio.Future]] = []
        self.busy = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None

    async def predict(self, images: list) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((images, future))
        if not self.busy:
            self.busy = True
            self.task = loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[list, asyncio.Future]]:
        jobs, count = [], 0
        while self.pending and (not jobs or count + len(self.pending[0][0]) <= MAX_BATCH):
            jobs.append(self.pending.pop(0))
            count += len(jobs[-1][0])
        return jobs

    async def _drain(self) -> None:
        # Between the executor's answer and `busy = False` nothing awaits, so a request that
        # arrives later always finds either a running drain or `busy` False.
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                jobs = self._take()
                images = [image for batch, _ in jobs for image in batch]
                try:
                    found = await loop.run_in_executor(self.executor, self.recognizer.predict_batch, images)
                except Exception as err:  # a model failure answers its requests, it does not stop the server
                    for _, future in jobs:
                        if not future.done():
                            future.set_exception(err)
                    continue
                start = 0
                for batch, future in jobs:
                    if not future.done():
                        future.set_result(found[start : start + len(batch)])
                    start += len(batch)
        finally:
            self.busy = False


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def allowed(headers) -> str:
    found = {k.lower(): v for k, v in (headers or {}).items()}.get("allow")
    return found or "another method"


def add_error_handlers(app) -> None:
    """Every refusal is JSON {"error": ...}; nothing the client sends may produce a 5xx."""

    @app.exception_handler(BadInput)
    async def bad_input(request, err: BadInput):
        return error_response(err.status, err.message)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        where = f"{request.method} {request.url.path}"
        if err.status_code == 404:
            return error_response(404, f"{where}: no such page; see /docs")
        if err.status_code == 405:
            return error_response(405, f"{where}: method not allowed; use {allowed(err.headers)}")
        return error_response(err.status_code, f"{where}: {err.detail}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where or 'request'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def crash(request, err: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(err).__name__}); please report it")


class Service:
    """The state one server holds: the recognizer, its batcher, limits and where uploads go."""

    def __init__(self, recognizer, max_images: int, save_dir: Path | None, min_confidence: float | None = None):
        self.recognizer, self.max_images, self.save_dir = recognizer, max_images, save_dir
        self.min_confidence = min_confidence
        self.batcher = Batcher(recognizer)
        # A colour model's uploads are decoded in colour: grey pixels could not be turned back.
        self.channels = getattr(getattr(recognizer, "settings", None), "channels", 1)
        self.served, self.started = 0, time.time()

    async def read(self, request: Request, field: str, json_ok: bool, raw_ok: bool) -> tuple[list[Upload], bool]:
        """The request's images, decoded, and whether to answer with a list."""
        kind = media_type(request.headers.get("content-type"))
        body = await request.body()  # BodyLimit has already capped it
        if not body:
            raise BadInput(400, f"body: empty; send an image (multipart field {field!r}{', JSON or raw bytes' if raw_ok else ''})")
        if kind == "multipart/form-data":
            async with request.form(max_files=self.max_images, max_fields=self.max_images + 8) as form:
                uploads, as_list = await from_form(form, field, self.max_images)
        elif kind == "application/json" and json_ok:
            uploads, as_list = from_json(body, self.max_images)
        elif raw_ok and is_raw(kind):
            uploads, as_list = [Upload(body, "body")], False
        else:
            accepted = "multipart/form-data, application/json or image bytes" if raw_ok else f"multipart/form-data with a {field!r} file"
            raise unsupported(kind, accepted)
        if sum(len(u.data) for u in uploads) > INLINE_DECODE_BYTES:
            await run_in_threadpool(lambda: [u.decode(self.channels) for u in uploads])
        else:
            for u in uploads:
                u.decode(self.channels)
        if self.save_dir is not None:
            await run_in_threadpool(self.save, uploads)
        return uploads, as_list

    def save(self, uploads: list[Upload]) -> None:
        """Keep the uploads under generated names: nothing from the request reaches the file system."""
        for u in uploads:
            with open(self.save_dir / f"{uuid.uuid4().hex}.{u.format}", "xb") as f:
                f.write(u.data)

    def unsure(self, confidence: float) -> bool:
        return self.min_confidence is not None and confidence < self.min_confidence

    async def recognize(self, uploads: list[Upload]) -> list:
        found = await self.batcher.predict([u.pixels for u in uploads])
        self.served += len(found)
        return found

    def health(self) -> dict:
        r = self.recognizer
        settings = getattr(r, "settings", None)
        return {
            "status": "ok",
            "model": Path(str(getattr(r, "path", "model"))).name,
            "settings": settings.describe() if settings is not None else "",
            "device": str(getattr(r, "device", "")),
            "calibrated": bool(getattr(getattr(r, "calibration", None), "calibrated", False)),
            "min_confidence": self.min_confidence,
            "served": self.served,
            "uptime_s": round(time.time() - self.started, 1),
        }


# The page is self-contained: its own script and style, images shown from blob: URLs.
CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"


def create_app(recognizer, max_bytes: int = 1 << 20, max_images: int = MAX_BATCH, save_dir=None, min_confidence: float | None = None):
    """The ASGI app around a loaded recognizer (anything with predict_batch); readings under
    `min_confidence` are answered as unsure (--min-confidence)."""
    service = Service(recognizer, max_images, Path(save_dir) if save_dir else None, min_confidence)
    app = FastAPIOffline(
        title="Captcha reader",
        version="1",
        description='Reads the text of captcha images with a trained model. Errors are JSON {"error": ...} with a 4xx status.',
    )
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    add_error_handlers(app)
    add_api_routes(app, service)
    add_page_routes(app, service, PAGE.read_text(encoding="utf-8"))
    app.state.service = service
    return app


def add_api_routes(app, service: Service) -> None:
    """POST /predict (the JSON API) and POST /b (the classic API)."""

    @app.post("/predict", response_model=Prediction | list[Prediction], responses=ERRORS, openapi_extra=PREDICT_BODY)
    async def predict(request: Request):
        """Read one image (answer: an object) or several in one batch (answer: a list, in order)."""
        start = time.perf_counter()
        uploads, as_list = await service.read(request, "image", json_ok=True, raw_ok=True)
        found = await service.recognize(uploads)
        ms = round((time.perf_counter() - start) * 1000, 2)
        answers = [{"text": text, "confidence": round(conf, 6), "unsure": service.unsure(conf), "ms": ms} for text, conf in found]
        return JSONResponse(answers if as_list else answers[0])

    @app.post("/b", response_model=Classic, responses=ERRORS, openapi_extra=CLASSIC_BODY)
    async def classic(request: Request):
        """The classic captcha-recognition API: one image in the multipart field `image_file`."""
        start = time.perf_counter()
        uploads, _ = await service.read(request, "image_file", json_ok=False, raw_ok=False)
        if len(uploads) != 1:
            raise BadInput(400, f"image_file: {len(uploads)} files; /b reads one image per request (use /predict for several)")
        (text, _conf), *_ = await service.recognize(uploads)
        ms = int((time.perf_counter() - start) * 1000)
        return JSONResponse({"value": text, "time": str(int(time.time())), "speed_time(ms)": ms})


def add_page_routes(app, service: Service, page: str) -> None:
    """GET /health and the web page at /."""

    @app.get("/health", response_model=Health)
    async def health():
        """Liveness and what is loaded."""
        return JSONResponse(service.health())

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"content-security-policy": CSP})


def bind(host: str, port: int) -> socket.socket:
    """Bind before loading anything heavy, so a busy port is one clear line, not a traceback."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # clients queue from now on, while the model still loads
    except OSError as err:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({err.strerror}); pick another port or host") from None
    return sock


@contextlib.contextmanager
def stop_signals_end_normally():
    """Ctrl+C or SIGTERM is how a server is meant to stop: exit 0 after uvicorn's graceful shutdown.

    uvicorn answers the signal by draining open requests, then raises it again for the handler
    that was in place before; left at Python's defaults, that turns a clean stop into exit
    status 130 (KeyboardInterrupt) or death by SIGTERM. These handlers take the re-raised signal
    and do nothing, so main() returns normally.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
