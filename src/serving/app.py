"""The drawing page's server (`python -m src.serve run_dir=DIR`): a local web page to draw a digit
on and watch the run's fold ensemble read it as you draw.

Serves the run's fold models from their `.keras` files in Keras' safe mode (load_folds), or with
`export=true` a SavedModel export of src.serving.export (the newest unless a version is named; the
run is exported first when it has none; a SavedModel is code, so only your own), loaded once at
start-up:

    GET  /          the drawing page (page.html: the stroke becomes a 28x28 MNIST-style
                    image in the browser, which is what is sent)
    POST /predict   {"pixels": [784 values 0-255]} -> {"label": k, "probabilities": [10 floats]}
    GET  /health    200 with the model's version and fold count

Every refused request gets a 4xx and a one-line JSON reason, {"error": "..."}. Requests that
wait together go through the model in one call (one model thread; the event loop never blocks).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src import rundir
from src.errors import UserError
from src.runtime.backend import require

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
DRAWN_SHAPE = (28, 28, 1)  # what the page makes of a drawing
KERAS = "keras"  # Served.version of the fold models served from their .keras files


# ---------------------------------------------------------------------------------------------
# the model

@dataclass
class Served:
    """A loaded export: float32 pixels [N, pixels] 0-255 in, class probabilities [N, classes] out."""

    predict: Callable[[np.ndarray], np.ndarray]
    pixels: int
    classes: int
    version: str = ""
    folds: int | None = None
    path: str = ""
    labels: list | None = None  # the competition's label of each output (labels.json); None: 0..classes-1

    def label(self, k: int):
        return self.labels[k] if self.labels else k

    def what(self) -> str:
        """What is served, for the page: the fold models, or which SavedModel export."""
        return "fold models (.keras, safe mode)" if self.version == KERAS else f"SavedModel export {self.version}"


def finished_config(run_dir: Path) -> dict:
    """The recorded config of a finished run whose images the page can draw; UserError otherwise.
    Checked without loading a model (and TensorFlow), so a wrong run_dir is refused at once."""
    config = rundir.finished_config(run_dir)
    shape = tuple(int(s) for s in config["data"]["image_shape"])
    if shape != DRAWN_SHAPE:
        raise UserError(f"{run_dir}: the page draws 28x28 grey digits, this run's images are {shape}")
    return config


def export_dir(run_dir: Path, version: int | None = None) -> Path:
    """The run's export to serve: `version`, or the newest, written first when there is none."""
    config = finished_config(run_dir)
    versions = rundir.exports(run_dir)
    if version is not None:
        if version not in versions:
            raise UserError(f"{run_dir / rundir.EXPORT / str(version)} is not an export of the run "
                            f"(exported: {list(versions) or 'none'})")
        return versions[version]
    if versions:
        return versions[max(versions)]
    from src.serving.export import export  # imports TensorFlow

    log.info("%s has no export yet: exporting its %d fold(s) first", run_dir, int(config["fold"]))
    return export(run_dir)


def load_folds(run_dir: Path) -> Served:
    """The run's fold models, loaded from their `.keras` files in Keras' safe mode (no code in
    them runs), as one ensemble: what src.serve serves unless asked for an export. Calls go in
    batches padded to a power of two, so the model is traced for a few shapes only."""
    config = finished_config(run_dir)
    from src.serving.export import ensemble_model, load_folds as load_fold_models  # imports Keras

    folds, _ = load_fold_models(run_dir)
    shape = tuple(int(s) for s in config["data"]["image_shape"])
    model = ensemble_model(folds, shape)
    classes = int(config["data"]["num_classes"])
    labels = rundir.read_submission_format(run_dir).labels(np.arange(classes))

    def predict(pixels: np.ndarray) -> np.ndarray:
        n = len(pixels)
        batch = np.zeros((1 << (n - 1).bit_length(), *shape), np.float32)
        batch[:n] = pixels.reshape(n, *shape)
        return np.asarray(model.predict_on_batch(batch), np.float32)[:n]

    return Served(predict, math.prod(shape), classes, KERAS, len(folds), "",
                  [v.item() if isinstance(v, np.generic) else v for v in labels])


def load_export(path: Path) -> Served:
    """Load an export of src.export (its serving_default signature) once."""
    require("tensorflow", "serving a SavedModel")
    import tensorflow as tf  # here, not at the top: a wrong run_dir is refused before its slow import

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    (pixels_spec,) = signature.structured_input_signature[1].values()
    (output_spec,) = signature.structured_outputs.values()

    def predict(pixels: np.ndarray) -> np.ndarray:
        # through `loaded` each time: a signature alone does not keep the model's variables alive
        (probs,) = loaded.signatures["serving_default"](pixels=tf.constant(pixels, tf.float32)).values()
        return probs.numpy()

    try:
        folds = int(rundir.read_record(path.parent.parent)["resolved_config"]["fold"])
    except (UserError, KeyError, TypeError, ValueError):  # an export moved out of its run dir
        folds = None
    labels_file = path / rundir.LABELS  # exports written before the labels were recorded have none: 0..K-1
    labels = json.loads(labels_file.read_text())["classes"] if labels_file.is_file() else None
    return Served(predict, int(pixels_spec.shape[-1]), int(output_spec.shape[-1]), path.name, folds, str(path), labels)


class Batcher:
    """One model thread: every request waiting when it is free goes through the model in one call
    (at most `max_batch` rows), so concurrent requests share calls and TensorFlow never runs twice
    at once."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int) -> None:
        self.predict, self.max_batch = predict, max(1, int(max_batch))
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="model", daemon=True).start()

    def submit(self, row: np.ndarray) -> Future:
        future: Future = Future()
        self.queue.put((row, future))
        return future

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                probs = self.predict(np.stack([row for row, _ in items]))
            except Exception as e:  # noqa: BLE001  (the requests get a 500; the thread lives on)
                log.exception("model call failed")
                for _, future in items:
                    future.set_exception(e)
                continue
            for (_, future), p in zip(items, probs):
                future.set_result(p)


# ---------------------------------------------------------------------------------------------
# the app

class PixelsIn(BaseModel):
    model_config = ConfigDict(strict=True)  # "12" or true is not a number
    pixels: list[float]


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """FastAPI's list of validation errors as one line (and 400 for a body that is not JSON)."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return 400, f"body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])} at position {first['loc'][-1]}"
    loc = [part for part in first["loc"] if part != "body"]
    if not loc:  # the body as a whole: missing, not an object, or not sent as JSON
        sent = "" if not isinstance(first.get("input"), (bytes, str)) else " sent as Content-Type: application/json"
        return 422, f'body: expected a JSON object {{"pixels": [...]}}{sent}'
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return 422, f"{where}: {first['msg']}{more}"


class BodyLimit:
    """Answers 413 to a request body over `limit` bytes: by its Content-Length before reading it,
    and by counting what arrives (a chunked body has no Content-Length). The body is read here in
    full and handed on."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = error(413, f"request body over {self.limit} bytes")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def make_app(model: Served | Path | str, max_batch: int = 64, max_body: int = 16384, docs: bool = False) -> FastAPI:
    """The server as an ASGI app: `model` is a loaded export or the path of one. `docs`: serve
    /openapi.json (the schema of the API), off unless asked for."""
    served = model if isinstance(model, Served) else load_export(Path(model))
    batcher = Batcher(served.predict, max_batch)
    page = PAGE.read_text()
    # no /docs or /redoc (they load from a CDN), and /openapi.json only when asked for
    app = FastAPI(title="kfold-digits", docs_url=None, redoc_url=None, openapi_url="/openapi.json" if docs else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(*validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such path: {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (allowed: {(exc.headers or {}).get('Allow', '?')})"
        else:
            message = str(exc.detail)
        return error(exc.status_code, message, exc.headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": served.version, "folds": served.folds, "pixels": served.pixels,
                "classes": served.classes, "labels": [served.label(k) for k in range(served.classes)],
                "served": served.what()}  # no paths on disk

    @app.post("/predict")
    async def predict(body: PixelsIn) -> JSONResponse:
        pixels = body.pixels
        if len(pixels) != served.pixels:
            return error(422, f"pixels: expected {served.pixels} values, got {len(pixels)}")
        bad = next((i for i, v in enumerate(pixels) if not 0 <= v <= 255), None)  # NaN fails too
        if bad is not None:
            return error(422, f"pixels[{bad}]: {pixels[bad]} is outside 0-255")
        probs = await asyncio.wrap_future(batcher.submit(np.asarray(pixels, np.float32)))
        return JSONResponse({"label": served.label(int(probs.argmax())), "probabilities": [float(p) for p in probs]})

    app.add_middleware(BodyLimit, limit=max_body)
    return app
