"""The API's description: answer models and request bodies for the OpenAPI document (/docs).

The endpoints read their bodies themselves (several content types, limits checked first), so
the request bodies are described here by hand; FastAPI publishes them at /openapi.json.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    text: str = Field(description="the captcha's text as the model reads it")
    confidence: float = Field(description="estimated probability that the whole text is right, 0..1 (calibrated on validation images)")
    unsure: bool = Field(description="confidence under --min-confidence: better fetch a new captcha (text is the best reading)")
    ms: float = Field(description="milliseconds the server spent on the request")


class Classic(BaseModel):
    value: str = Field(description="the captcha's text")
    time: str = Field(description="Unix time of the answer, in seconds")
    speed_time_ms: int = Field(alias="speed_time(ms)", description="milliseconds spent")


class Error(BaseModel):
    error: str = Field(description="what was wrong with the request and what to send instead")


class Health(BaseModel):
    status: str
    model: str
    settings: str
    device: str
    calibrated: bool = Field(description="whether the model's confidence was calibrated (models saved before calibration were not)")
    min_confidence: float | None = Field(description="readings under it are answered as unsure (--min-confidence); null: never")
    served: int
    uptime_s: float


BINARY = {"type": "string", "format": "binary"}
BASE64 = {"type": "string", "format": "byte"}
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image or several: a multipart upload (repeat the `image` field for several), JSON with "
        "base64, or the raw bytes of one image.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["image"], "properties": {"image": {"type": "array", "items": BINARY}}}
            },
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "required": ["image"], "properties": {"image": BASE64}},
                        {"type": "object", "required": ["images"], "properties": {"images": {"type": "array", "items": BASE64}}},
                    ]
                }
            },
            "application/octet-stream": {"schema": BINARY},
            "image/png": {"schema": BINARY},
        },
    }
}
CLASSIC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image_file"], "properties": {"image_file": BINARY}}}
        },
    }
}
ERRORS = {
    400: {"model": Error, "description": "empty body, wrong field, not an image, truncated image, absurd dimensions"},
    413: {"model": Error, "description": "body over --max-bytes, or too many images"},
    415: {"model": Error, "description": "a content type this endpoint does not accept"},
    422: {"model": Error, "description": "a request FastAPI could not parse"},
}
