"""captcha_server.py: every endpoint in-process, every bad input, a fuzz run, a real server and a real browser."""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from cdp_browser import Browser
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from script_runner import start_listening

import captcha_server
from captchakit.api import load_model
from captchakit.serve.app import create_app
from captchakit.serve.input import MAX_SIDE, BadInput, BodyLimit

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 200_000  # --max-bytes in these tests
UUID_NAME = re.compile(r"^[0-9a-f]{32}\.png$")


class Counting:
    """The real recognizer, recording how many images each forward pass got."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def predict_batch(self, images):
        self.batches.append(len(images))
        return self.inner.predict_batch(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def recognizer(tiny_model):
    return load_model(tiny_model, "cpu")


@pytest.fixture(scope="module")
def pngs(tiny_data) -> list[Path]:
    return sorted((tiny_data / "predict").glob("*.png"))[:6]


@pytest.fixture
def counting(recognizer):
    return Counting(recognizer)


@pytest.fixture
def client(counting):
    with TestClient(create_app(counting, max_bytes=LIMIT, max_images=8)) as c:
        yield c


def png_header(width: int, height: int, rows: int = 2) -> bytes:
    """A grey PNG claiming width x height whose data holds only `rows` rows: huge on paper, tiny on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@functools.cache
def real_bomb(side: int = 8192) -> bytes:
    """A complete, valid PNG of side x side black pixels (64 MiB decoded) in about 65 kB."""
    z, row = zlib.compressobj(9), b"\0" * (side + 1)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    head = png_header(side, side, rows=0)
    i = head.index(b"IDAT") - 4
    return head[:i] + struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data)) + head[-12:]


def one(path: Path, field: str = "image", name: str | None = None) -> dict:
    return {"files": {field: (name or path.name, path.read_bytes(), "image/png")}}


# --- the endpoints -----------------------------------------------------------------------


def test_predict_multipart_answers_what_the_recognizer_reads(client, recognizer, pngs):
    r = client.post("/predict", **one(pngs[0]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"text", "confidence", "unsure", "ms"}
    want = recognizer.predict(pngs[0])
    assert body["text"] == want.text and body["confidence"] == pytest.approx(want.confidence, abs=1e-5)
    assert body["ms"] > 0 and len(body["text"]) == 4 and body["unsure"] is False  # no --min-confidence: never unsure


def test_min_confidence_marks_unsure_readings_and_still_gives_the_text(counting, recognizer, pngs):
    found = recognizer.predict_batch(pngs[:4])
    middle = sorted(p.confidence for p in found)[2]  # two readings under it, two at or over it
    with TestClient(create_app(counting, max_images=8, min_confidence=middle)) as c:
        answers = c.post("/predict", files=[("image", (p.name, p.read_bytes(), "image/png")) for p in pngs[:4]]).json()
        assert c.get("/health").json()["min_confidence"] == middle
    assert [a["unsure"] for a in answers] == [p.confidence < middle for p in found]
    assert sum(a["unsure"] for a in answers) == 2
    assert [a["text"] for a in answers] == [p.text for p in found]


def test_several_files_in_one_request_are_one_batch_in_order(client, counting, recognizer, pngs):
    files = [("image", (p.name, p.read_bytes(), "image/png")) for p in pngs[:3]]
    r = client.post("/predict", files=files)
    assert r.status_code == 200, r.text
    assert [a["text"] for a in r.json()] == [p.text for p in recognizer.predict_batch(pngs[:3])]
    assert counting.batches == [3]


def test_json_base64_single_and_list_and_data_url(client, recognizer, pngs):
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in pngs[:2]]
    single = client.post("/predict", json={"image": b64[0]}).json()
    assert single["text"] == recognizer.predict(pngs[0]).text
    several = client.post("/predict", json={"images": b64}).json()
    assert [a["text"] for a in several] == [p.text for p in recognizer.predict_batch(pngs[:2])]
    data_url = client.post("/predict", json={"image": "data:image/png;base64," + b64[0]}).json()
    assert data_url["text"] == single["text"]


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream"])
def test_raw_image_bytes(client, recognizer, pngs, content_type):
    r = client.post("/predict", content=pngs[1].read_bytes(), headers={"content-type": content_type})
    assert r.status_code == 200 and r.json()["text"] == recognizer.predict(pngs[1]).text


def test_classic_b_endpoint(client, recognizer, pngs):
    # As the classic API's clients send it: the file under `image_file`, its part typed just "application".
    r = client.post("/b", files={"image_file": ("captcha.png", pngs[2].read_bytes(), "application")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"value", "time", "speed_time(ms)"}
    assert body["value"] == recognizer.predict(pngs[2]).text
    assert body["time"].isdigit() and abs(int(body["time"]) - time.time()) < 60  # Unix seconds, as a string
    assert isinstance(body["speed_time(ms)"], int) and body["speed_time(ms)"] >= 0


def test_health_page_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "model.pkl" and "160x60" in health["settings"]
    assert health["calibrated"] is True and health["min_confidence"] is None  # train_model calibrates on its validation set
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "/predict" in page.text
    # Self-contained: no script, style or font from anywhere else.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/b", "/health"} <= set(spec["paths"])
    assert set(spec["paths"]["/predict"]["post"]["requestBody"]["content"]) >= {"multipart/form-data", "application/json"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    js = re.search(r"""src=["']([^"']*swagger-ui-bundle\.js)""", docs.text)[1]
    assert client.get(js).status_code == 200  # the docs page works offline


def test_concurrent_requests_share_forward_passes(recognizer, pngs):
    counting = Counting(recognizer)
    app = create_app(counting, max_bytes=LIMIT)
    images = [p.read_bytes() for p in pngs] * 3

    async def send_all():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post("/predict", files={"image": ("x.png", b, "image/png")}) for b in images))

    answers = asyncio.run(send_all())
    want = {p.read_bytes(): recognizer.predict(p).text for p in pngs}
    assert [a.json()["text"] for a in answers] == [want[b] for b in images]
    assert sum(counting.batches) == len(images) and max(counting.batches) > 1


# --- bad input: always a 4xx with a JSON error, and the server keeps serving -------------


def bad_requests(png: bytes) -> dict:
    """name -> (path, request arguments, status, a phrase the error must contain)."""
    raw = {"content-type": "image/png"}
    return {
        "not an image": ("/predict", {"files": {"image": ("a.png", b"hello, not a png", "image/png")}}, 400, "not an image"),
        "truncated image": ("/predict", {"content": png[: len(png) // 2], "headers": raw}, 400, "truncated"),
        "empty body": ("/predict", {"content": b"", "headers": raw}, 400, "body: empty"),
        "empty file": ("/predict", {"files": {"image": ("a.png", b"", "image/png")}}, 400, "image: empty"),
        "wrong field name": ("/predict", {"files": {"file": ("a.png", png, "image/png")}}, 400, "no 'image' field (found 'file')"),
        "wrong field for /b": ("/b", {"files": {"image": ("a.png", png, "image/png")}}, 400, "no 'image_file' field"),
        "text field, not a file": ("/predict", {"data": {"image": "abc"}, "files": {"x": ("x", b"x")}}, 400, "not a file"),
        "over --max-bytes": ("/predict", {"content": png + b"\0" * LIMIT, "headers": raw}, 413, "too large"),
        "absurd dimensions": ("/predict", {"content": png_header(MAX_SIDE + 1, 10), "headers": raw}, 400, "absurd dimensions"),
        "too many pixels": ("/predict", {"content": png_header(3000, 3000), "headers": raw}, 400, "absurd dimensions 3000x3000"),
        "PIL's own bomb limit": ("/predict", {"content": png_header(30000, 30000), "headers": raw}, 400, "absurd dimensions"),
        "decompression bomb": ("/predict", {"content": real_bomb(), "headers": raw}, 400, "67108864 pixels"),
        "wrong content type": ("/predict", {"content": png, "headers": {"content-type": "text/plain"}}, 415, "'text/plain'"),
        "JSON to /b": ("/b", {"json": {"image": base64.b64encode(png).decode()}}, 415, "multipart/form-data"),
        "bad JSON": ("/predict", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        "JSON without image": ("/predict", {"json": {"picture": "x"}}, 400, 'without an "image"'),
        "bad base64": ("/predict", {"json": {"image": "***"}}, 400, "not valid base64"),
        "base64 of text": ("/predict", {"json": {"image": base64.b64encode(b"hi").decode()}}, 400, "image: not an image"),
        "image not a string": ("/predict", {"json": {"images": [1]}}, 400, "images[0]: expected a base64 string"),
        "too many images": ("/predict", {"json": {"images": [base64.b64encode(png).decode()] * 9}}, 413, "at most 8"),
        "two files to /b": ("/b", {"files": [("image_file", ("a.png", png, "image/png"))] * 2}, 400, "/b reads one image"),
        "broken multipart": (
            "/predict",
            {"content": b"--x\r\nno headers", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            400,
            "",
        ),
    }


CASES = list(bad_requests(b"").keys())


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_4xx_json_error_and_the_server_goes_on(client, pngs, case):
    path, kwargs, status, phrase = bad_requests(pngs[0].read_bytes())[case]
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"error"} and phrase in r.json()["error"]
    assert client.post("/predict", **one(pngs[0])).status_code == 200


def test_unknown_page_and_wrong_method_are_json(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "GET /nowhere: no such page; see /docs"}
    r = client.get("/predict")
    assert r.status_code == 405 and "use POST" in r.json()["error"]


def test_stream_over_the_limit_is_cut_off_without_content_length():
    """A client that sends no Content-Length is stopped once the stream passes --max-bytes."""
    read = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            read.append(len(message["body"]))
            if not message.get("more_body"):
                return

    async def receive():
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    scope = {"type": "http", "headers": [(b"content-type", b"image/png")]}
    with pytest.raises(BadInput, match="too large") as err:
        asyncio.run(BodyLimit(app, max_bytes=2500)(scope, receive, None))
    assert err.value.status == 413 and read == [1000, 1000]


# --- uploads are stored only when asked, never under the client's name -----------------------


def test_uploads_are_saved_only_with_save_dir_under_generated_names(recognizer, pngs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(recognizer, max_bytes=LIMIT)) as c:
        assert c.post("/predict", **one(pngs[0], name="keep-me.png")).status_code == 200
    assert list(tmp_path.iterdir()) == []
    saved = tmp_path / "saved"
    saved.mkdir()
    with TestClient(create_app(recognizer, max_bytes=LIMIT, save_dir=saved)) as c:
        assert c.post("/predict", **one(pngs[0], name="../../evil.png")).status_code == 200
        assert c.post("/predict", content=pngs[1].read_bytes(), headers={"content-type": "image/png"}).status_code == 200
        assert c.post("/predict", files={"image": ("x.png", b"junk", "image/png")}).status_code == 400
    names = sorted(p.name for p in saved.iterdir())
    assert len(names) == 2 and all(UUID_NAME.match(n) for n in names)
    assert {(saved / n).read_bytes() for n in names} == {pngs[0].read_bytes(), pngs[1].read_bytes()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


# --- fuzzing against the OpenAPI description: no 5xx, answers as described ------------------


def fuzz_operation(operation, mode, checks, seen: set[int]) -> None:
    """Send schemathesis' cases for one operation and generation mode; each answer must pass `checks`."""

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call()
        seen.add(response.status_code)
        case.validate_response(response, checks=checks)

    check()


def test_fuzz_openapi_no_server_errors(recognizer):
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

    # Schema-valid bytes are rarely a valid image, so "positive data accepted" cannot hold;
    # what must hold is no 5xx and answers that match the description.
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(recognizer, max_bytes=LIMIT))
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE] if operation.method == "get" else [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        for mode in modes:
            fuzz_operation(operation, mode, checks, statuses.setdefault(operation.label, set()))
    assert set(statuses) == {"POST /predict", "POST /b", "GET /health"}
    assert all(code < 500 for codes in statuses.values() for code in codes)


# --- the real command: a server process on loopback --------------------------------------


def start_server(*args) -> tuple[subprocess.Popen, str]:
    """Run captcha_server.py on 127.0.0.1 with a free port; (process, base URL) once it listens."""
    return start_listening("captcha_server.py", "--host", "127.0.0.1", "--port", "0", *args)


@pytest.fixture(scope="module")
def live_server(tiny_model, tmp_path_factory):
    saved = tmp_path_factory.mktemp("uploads")
    proc, url = start_server("--model", tiny_model, "--max-bytes", LIMIT, "--save-dir", saved, "--device", "cpu")
    yield SimpleNamespace(url=url, port=int(url.rsplit(":", 1)[1]), saved=saved, proc=proc)
    proc.terminate()  # SIGTERM: a graceful stop, exit 0 and a summary line
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.startswith("stopped: served "), err


def raw_http(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply.split(b"\r\n\r\n", 1)[1]


def test_real_server_answers_and_refuses_oversized_bodies(live_server, recognizer, pngs):
    with httpx2.Client(base_url=live_server.url, timeout=30) as c:
        r = c.post("/predict", files={"image": ("../../etc/passwd", pngs[0].read_bytes(), "image/png")})
        assert r.status_code == 200 and r.json()["text"] == recognizer.predict(pngs[0]).text
        assert c.get("/health").json()["served"] >= 1
    saved = [p.name for p in live_server.saved.iterdir()]
    assert saved and all(UUID_NAME.match(name) for name in saved)  # kept, never under the client's name
    # Declared too large: refused before the body is read.
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode()
    status, body = raw_http(live_server.port, head)
    assert status == 413 and b"too large" in body
    # No length given: cut off once the chunked stream passes the limit.
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (50_000, b"\0" * 50_000)
    status, body = raw_http(live_server.port, head, chunk * 5 + b"0\r\n\r\n")
    assert status == 413 and b"too large" in body
    assert live_server.proc.poll() is None


def test_command_line_errors_are_one_line(cli, tiny_model, tmp_path):
    code, _, err = cli(captcha_server.main, "--model", tmp_path / "missing.pkl", "--port", "0")
    assert code == 2 and "missing.pkl: file not found" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = cli(captcha_server.main, "--model", tiny_model, "--port", busy.getsockname()[1])
    assert code == 2 and "cannot listen there" in err
    code, _, err = cli(captcha_server.main, "--max-bytes", "0")
    assert code == 2 and err.strip().endswith("--max-bytes 0: must be at least 1")


# --- a person's view: the page in headless chromium ---------------------------------------


@pytest.mark.slow
def test_page_reads_a_picked_image_in_headless_chromium(live_server, chromium, recognizer, pngs, tmp_path):
    (tmp_path / "profile").mkdir()
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(live_server.url + "/")
        browser.set_files("#file", pngs[0])
        text = browser.wait_for("document.getElementById('result-text').textContent")
        assert text == recognizer.predict(pngs[0]).text
        assert browser.eval("document.getElementById('confidence').textContent").endswith("%")
        assert browser.eval("document.getElementById('time').textContent").endswith(" ms")
        browser.set_files("#file", pngs[1], pngs[2])
        assert browser.wait_for("document.getElementById('status').textContent.startsWith('Read 2') && 'ok'") == "ok"
        # The batch's last answer is on show; the first image and the batch's first moved to the history.
        text = browser.eval("document.getElementById('result-text').textContent")
        assert text == recognizer.predict(pngs[2]).text
        history = browser.eval("Array.from(document.querySelectorAll('#history td.text')).map(td => td.textContent)")
        assert history == [recognizer.predict(p).text for p in (pngs[1], pngs[0])]
        shot = browser.screenshot(tmp_path / "page.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        # A file that is not an image: the page shows the server's error, no reload.
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        browser.set_files("#file", bad)
        assert "not an image" in browser.wait_for(
            "document.getElementById('error').classList.contains('shown') && document.getElementById('error').textContent"
        )
        assert browser.eval("document.getElementById('result-text').textContent") == text
    finally:
        browser.close()
