"""The labelling page's HTTP app: the page, the folder's images, and a small JSON API over the store.

Every answer is one POST that the store writes to disk before it is answered. Each answer's reply
is the new state, with the next images to show and the model's readings of them, so that the page
can move on to the next image at once and still follow a re-sort after retraining.

    GET  /                   the page (captchakit/web/label.html)
    GET  /api/state          counts, model, training status and the next images
    POST /api/answer         {"name": ..., "label": ...}: save a label
    POST /api/unreadable     {"name": ...}: mark an image unreadable
    POST /api/skip           {"name": ...}: show it again after the others
    POST /api/retrain        retrain on the labels so far, in the background
    GET  /image/NAME         an image of the folder (only those: nothing else of the disk is served)

POST bodies must be JSON: a page of another site cannot send that to this one without asking first.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from captchakit.label.retrain import Busy, Retrainer
from captchakit.label.store import LabelStore

PAGE = Path(__file__).resolve().parents[1] / "web" / "label.html"
AHEAD = 16  # images sent ahead with every answer: the page shows the next one without waiting
# The page is self-contained: its own script and style; images come from this server.
CSP = "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"


class Answer(BaseModel):
    name: str
    label: str = ""


class Name(BaseModel):
    name: str


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def add_error_handlers(app) -> None:
    """Every refusal is JSON {"error": ...} with a 4xx status, which the page shows as it is."""

    @app.exception_handler(Refused)
    async def refused(request, err: Refused):
        return error(err.status, err.message)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        return error(err.status_code, f"{request.method} {request.url.path}: {err.detail}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(422, f"{where or 'request'}: {first.get('msg', 'invalid request')}")


def require_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Refused(415, f"content type {kind or 'none'}: send JSON (application/json)")


JSON = Depends(require_json)  # checked before the body is read


def state(store: LabelStore, retrainer: Retrainer) -> dict:
    return {
        "folder": str(store.folder),
        "labels_file": str(store.labels_path),
        "model": store.model,
        "note": store.misfit(),
        "version": store.version,
        "counts": store.counts(),
        "queue": store.upcoming(AHEAD),
        "training": retrainer.status(),
    }


def create_app(store: LabelStore, retrainer: Retrainer):
    """The ASGI app over one folder's store and its retrainer."""
    app = FastAPIOffline(title="Captcha labelling", version="1", description="Label a folder of captchas; answers go to its labels.csv.")
    add_error_handlers(app)
    add_answer_routes(app, store, retrainer)
    add_page_routes(app, store, retrainer, PAGE.read_text(encoding="utf-8"))
    app.state.store, app.state.retrainer = store, retrainer
    return app


def add_answer_routes(app, store: LabelStore, retrainer: Retrainer) -> None:
    """The POSTs that change the folder's answers; each one answers with the new state."""

    def act(name: str, do) -> JSONResponse:
        try:
            do()
        except KeyError:
            raise Refused(404, f"{name}: no such image in {store.folder}") from None
        except ValueError as err:
            raise Refused(400, str(err)) from None
        except OSError as err:  # a full disk, a folder made read-only: the answer is not saved, and the page says so
            raise Refused(500, f"not saved: cannot write {err.filename or store.folder} ({err.strerror or err})") from None
        return JSONResponse(state(store, retrainer))

    # Plain (not async) handlers: FastAPI runs them on its thread pool, so a write to disk never blocks the event loop.
    @app.post("/api/answer", dependencies=[JSON])
    def answer(body: Answer):
        """Save a label for an image."""
        return act(body.name, lambda: store.answer(body.name, body.label))

    @app.post("/api/unreadable", dependencies=[JSON])
    def unreadable(body: Name):
        """Mark an image unreadable: never shown again, never trained on."""
        return act(body.name, lambda: store.mark_unreadable(body.name))

    @app.post("/api/skip", dependencies=[JSON])
    def skip(body: Name):
        """Show an image again after all the others."""
        return act(body.name, lambda: store.skip(body.name))

    @app.post("/api/retrain", dependencies=[JSON])
    def retrain():
        """Retrain on the labels so far in the background; GET /api/state says how it goes."""
        try:
            retrainer.start()
        except Busy as err:
            raise Refused(409, str(err)) from None
        except ValueError as err:
            raise Refused(400, str(err)) from None
        return JSONResponse(state(store, retrainer))


def add_page_routes(app, store: LabelStore, retrainer: Retrainer, page: str) -> None:
    @app.get("/api/state")
    def current():
        """Counts, the model, the training status and the next images to show."""
        return JSONResponse(state(store, retrainer))

    @app.get("/image/{name}")
    def image(name: str):
        """One image of the folder, by its file name."""
        path = store.folder / name
        if name not in store.known or not path.is_file():  # only the folder's own images: no path from a request reaches the disk
            raise Refused(404, f"{name}: no such image in {store.folder}")
        return FileResponse(path, headers={"cache-control": "no-cache"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page, headers={"content-security-policy": CSP, "cache-control": "no-store"})
