"""What captcha_server.py accepts: request bodies turned into decoded images, or one clear 4xx.

Every way an upload can be wrong ends here as `BadInput(status, message)`, which the server
answers as JSON `{"error": message}`: an empty or oversized body, a wrong content type or
field name, bad base64, something that is not an image, a truncated image, or an image whose
header claims absurd dimensions (a decompression bomb is refused before its pixels are decoded).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from captchakit.data.images import ImageError, load_image

# Captchas are a few hundred pixels wide: anything far bigger is a mistake or an attack. The
# header is checked against these before a single pixel is decoded.
MAX_SIDE = 4096
MAX_PIXELS = 4_000_000
RAW_TYPES = ("application/octet-stream", "image/")
FORMATS = "PNG, JPEG, GIF, BMP or WebP"
OPEN_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg"}


class BadInput(Exception):
    """A request the server refuses: HTTP `status` (4xx) and a message saying what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Upload:
    """One uploaded image: its bytes, a name for messages, and after `decode()` its pixels."""

    def __init__(self, data: bytes, what: str):
        self.data, self.what = data, what
        self.format = "bin"
        self.pixels: np.ndarray | None = None  # (H, W) uint8 (H, W, 3 for a colour model) at the upload's own size

    def decode(self, channels: int = 1) -> Upload:
        """Check the header, then decode (grey, or RGB for `channels` 3); raises BadInput for anything that is not a sane image."""
        if not self.data:
            raise BadInput(400, f"{self.what}: empty; send the bytes of a {FORMATS} image")
        try:
            # Reads the header only; the formats list keeps PIL's rarer decoders (EPS runs Ghostscript) out of reach.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's warning is a refusal here
                image = Image.open(io.BytesIO(self.data), formats=OPEN_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise BadInput(400, f"{self.what}: refused, absurd dimensions ({err}); send a captcha-sized image") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise BadInput(400, f"{self.what}: not an image this server can read; send a {FORMATS} file") from None
        width, height = image.size
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
            raise BadInput(
                400,
                f"{self.what}: refused, absurd dimensions {width}x{height} (at most {MAX_SIDE} pixels a side and "
                f"{MAX_PIXELS:,} in all); send a captcha-sized image",
            )
        self.format = EXTENSIONS.get(image.format or "", (image.format or "bin").lower())
        try:
            # Decoded at its own size: the recognizer resizes it to what its model reads.
            self.pixels = load_image(image, width, height, channels=channels)
        except ImageError as err:
            raise BadInput(400, f"{self.what}: truncated or corrupt image ({err}); send the whole file") from None
        return self


def media_type(content_type: str | None) -> str:
    """'Multipart/Form-Data; boundary=x' -> 'multipart/form-data'; '' when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_raw(kind: str) -> bool:
    return kind == "" or any(kind.startswith(t) for t in RAW_TYPES)


def from_base64(text, what: str) -> Upload:
    if not isinstance(text, str):
        raise BadInput(400, f"{what}: expected a base64 string, got {type(text).__name__}")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # a data: URL, as a browser's FileReader gives it
    try:
        return Upload(base64.b64decode(text, validate=True), what)
    except (binascii.Error, ValueError):
        raise BadInput(400, f"{what}: not valid base64; send the image file's bytes base64-encoded") from None


def from_json(body: bytes, max_images: int) -> tuple[list[Upload], bool]:
    """{"image": "<base64>"} or {"images": ["<base64>", ...]} -> (uploads, answer with a list)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadInput(400, 'body: not valid JSON; send {"image": "<base64>"} or {"images": ["<base64>", ...]}') from None
    if isinstance(doc, dict) and "image" in doc:
        return [from_base64(doc["image"], "image")], False
    if isinstance(doc, dict) and isinstance(doc.get("images"), list):
        images = doc["images"]
        if not images:
            raise BadInput(400, '"images": empty list; send at least one base64 image')
        check_count(len(images), max_images)
        return [from_base64(text, f"images[{i}]") for i, text in enumerate(images)], True
    raise BadInput(400, 'body: JSON without an "image" string or "images" list; send {"image": "<base64>"}')


async def from_form(form, field: str, max_images: int) -> tuple[list[Upload], bool]:
    """The files of multipart field `field` -> (uploads, answer with a list)."""
    values = form.getlist(field)
    if not values:
        found = ", ".join(repr(k) for k in form) or "no fields"
        raise BadInput(400, f"form: no {field!r} field (found {found}); send the image as the {field!r} file field")
    check_count(len(values), max_images)
    uploads = []
    for i, value in enumerate(values):
        what = field if len(values) == 1 else f"{field}[{i}]"
        if isinstance(value, str):
            raise BadInput(400, f"{what}: a text field, not a file; send the image as a file upload")
        uploads.append(Upload(await value.read(), what))
    return uploads, len(values) > 1


def check_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise BadInput(413, f"request: {count} images, at most {max_images} per request; split it into smaller requests")


def unsupported(kind: str, accepted: str) -> BadInput:
    return BadInput(415, f"Content-Type {kind!r} is not accepted here; send {accepted}")


class BodyLimit:
    """ASGI middleware: refuse a body over `max_bytes`, by its Content-Length and by what arrives.

    A client that declares too much gets 413 before anything is read; one that lies about (or
    omits) its length is cut off as soon as the stream passes the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            problem = self.declared_problem(declared)
            if problem:
                return await send_error(send, *problem)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self.too_large(seen)
            return message

        await self.app(scope, limited_receive, send)

    def declared_problem(self, declared: bytes) -> tuple[int, str] | None:
        try:
            size = int(declared)
        except ValueError:
            return 400, "Content-Length: not a number"
        if size > self.max_bytes:
            return self.too_large(size).status, self.too_large(size).message
        return None

    def too_large(self, size: int) -> BadInput:
        limit = f"{self.max_bytes:,}"
        return BadInput(413, f"body: too large ({size:,} bytes or more; the limit is {limit}, --max-bytes); send a smaller image")


async def send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
