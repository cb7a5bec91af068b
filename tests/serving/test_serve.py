"""python -m src.serve: the API's answers to bad input, and a digit drawn on the page in headless
Chromium that the page and src.predict read alike."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(finished_run, tmp_path_factory):
    """`python -m src.serve` on a copy of the shared finished run: the fold models in safe mode.
    Yields (base url, run dir); the server's log is checked at the end."""
    root = tmp_path_factory.mktemp("serve")
    run_dir = root / "run"
    shutil.copytree(finished_run, run_dir)
    port = free_port()
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "src.serve", f"run_dir={run_dir}", f"port={port}",
                                 "header_timeout=2", "body_timeout=2"], cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url, run_dir
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log.read_text()
    assert "serving the fold models (.keras, safe mode) of" in text and "has no export yet" not in text
    assert "Traceback" not in text, text[-3000:]


def digits(run_dir: Path) -> np.ndarray:
    """The run's test images, [N, 784] uint8."""
    test = json.loads((run_dir / "run.json").read_text())["resolved_config"]["data"]["test"]
    return pd.read_csv(test).to_numpy().astype(np.uint8)


def good_request(url: str, pixels: np.ndarray) -> dict:
    r = httpx.post(f"{url}/predict", json={"pixels": pixels.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"label", "probabilities"} and len(body["probabilities"]) == 10
    assert body["label"] == int(np.argmax(body["probabilities"])) and abs(sum(body["probabilities"]) - 1) < 1e-4
    return body


def values(items: list) -> bytes:
    return json.dumps({"pixels": items}).encode()


JSON = {"content-type": "application/json"}
BAD = {  # name: (method, path, body, headers, status, the reason starts with)
    "malformed JSON": ("POST", "/predict", b'{"pixels": [1, 2', JSON, 400, "body is not valid JSON: "),
    "783 values": ("POST", "/predict", values([0] * 783), JSON, 422, "pixels: expected 784 values, got 783"),
    "785 values": ("POST", "/predict", values([0] * 785), JSON, 422, "pixels: expected 784 values, got 785"),
    "empty list": ("POST", "/predict", values([]), JSON, 422, "pixels: expected 784 values, got 0"),
    "a string": ("POST", "/predict", values([0] * 5 + ["7"] + [0] * 778), JSON, 422, "pixels[5]: Input should be a valid number"),
    "a bool": ("POST", "/predict", values([True] + [0] * 783), JSON, 422, "pixels[0]: Input should be a valid number"),
    "a null": ("POST", "/predict", values([0] * 783 + [None]), JSON, 422, "pixels[783]: Input should be a valid number"),
    "not a list": ("POST", "/predict", b'{"pixels": 3}', JSON, 422, "pixels: Input should be a valid list"),
    "over 255": ("POST", "/predict", values([0] * 9 + [256] + [0] * 774), JSON, 422, "pixels[9]: 256.0 is outside 0-255"),
    "negative": ("POST", "/predict", values([-1] + [0] * 783), JSON, 422, "pixels[0]: -1.0 is outside 0-255"),
    "NaN": ("POST", "/predict", b'{"pixels": [NaN' + b", 0" * 783 + b"]}", JSON, 422, "pixels[0]: nan is outside 0-255"),
    "no pixels key": ("POST", "/predict", b'{"pixel": []}', JSON, 422, "pixels: Field required"),
    "a list body": ("POST", "/predict", b"[1, 2]", JSON, 422, 'body: expected a JSON object {"pixels": [...]}'),
    "empty body": ("POST", "/predict", b"", JSON, 422, 'body: expected a JSON object {"pixels": [...]}'),
    "not sent as JSON": ("POST", "/predict", values([0] * 784), {"content-type": "text/plain"}, 422,
                         'body: expected a JSON object {"pixels": [...]} sent as Content-Type: application/json'),
    "too big": ("POST", "/predict", b" " * 20_000, JSON, 413, "request body over 16384 bytes"),
    "too big, chunked": ("POST", "/predict", iter([b" " * 8192] * 3), JSON, 413, "request body over 16384 bytes"),
    "unknown path": ("GET", "/nope", None, {}, 404, "no such path: /nope"),
    "GET /predict": ("GET", "/predict", None, {}, 405, "GET is not allowed on /predict (allowed: POST)"),
    "DELETE /": ("DELETE", "/", None, {}, 405, "DELETE is not allowed on / (allowed: GET)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_and_a_one_line_reason(server, case):
    url, run_dir = server
    method, path, body, headers, status, reason = BAD[case]
    r = httpx.request(method, url + path, content=body, headers=headers, timeout=30)
    if case == "too big, chunked":
        assert "content-length" not in r.request.headers  # counted as it streams in
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and r.json()["error"].startswith(reason) and "\n" not in r.text
    good_request(url, digits(run_dir)[0])  # and the server goes on answering


def test_health_and_predictions_match_the_run(server):
    url, run_dir = server
    health = httpx.get(f"{url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["folds"] == 2 and health["pixels"] == 784
    assert health["version"] == "keras" and health["served"] == "fold models (.keras, safe mode)"
    assert str(run_dir) not in json.dumps(health) and httpx.get(f"{url}/openapi.json", timeout=30).status_code == 404
    expected = pd.read_csv(run_dir / "test_probs.csv").drop(columns="ImageId").to_numpy()
    for i, pixels in enumerate(digits(run_dir)[:3]):
        np.testing.assert_allclose(good_request(url, pixels)["probabilities"], expected[i], atol=2e-3)
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200 and 'id="label"' in page.text
    assert not re.search(r"(src|href)=\"(?!data:)|https?:|url\(|@import", page.text)  # nothing loaded from elsewhere


def test_make_app_in_process(server):
    """The same app in-process (httpx's ASGI transport), on a SavedModel export of the run (the
    export=true route): it reads the digits as the fold models the server serves do."""
    from src.serving.app import export_dir, make_app

    url, run_dir = server
    pixels = digits(run_dir)[1]
    app = make_app(export_dir(run_dir), max_body=4096)

    async def calls() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return [await client.get("/health"), await client.post("/predict", json={"pixels": pixels.tolist()}),
                    await client.post("/predict", content=b" " * 5000, headers=JSON), await client.get("/openapi.json")]

    health, answer, too_big, schema = asyncio.run(calls())
    assert health.json()["folds"] == 2 and health.json()["served"] == "SavedModel export 1" and answer.status_code == 200
    assert schema.status_code == 404

    async def documented() -> httpx.Response:
        app = make_app(export_dir(run_dir), docs=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return await client.get("/openapi.json")

    assert "/predict" in asyncio.run(documented()).json()["paths"]
    np.testing.assert_allclose(answer.json()["probabilities"], good_request(url, pixels)["probabilities"], atol=1e-4)
    assert too_big.status_code == 413 and too_big.json() == {"error": "request body over 4096 bytes"}


def test_a_run_dir_that_is_not_a_finished_run_is_refused(finished_run, tmp_path):
    from src.errors import UserError
    from src.serving.app import finished_config

    proc = subprocess.run([sys.executable, "-m", "src.serve", f"run_dir={tmp_path}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {tmp_path} is not a run dir of src.cv (no readable "
                                                    f"run.json: [Errno 2] No such file or directory: '{tmp_path / 'run.json'}'): "
                                                    "give the hydra.run.dir of a src.cv run, or choose an empty dir for a new one")
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "fold_1" / "done.json").unlink()
    with pytest.raises(UserError, match=r"fold\(s\) \[1\] of 2 are not complete"):
        finished_config(run_dir)


# ---------------------------------------------------------------------------------------------
# the page in a browser

def draw(page, image: np.ndarray) -> None:
    """Trace a 28x28 digit on the page's canvas with the mouse: along each row's runs of ink."""
    box = page.locator("#pad").bounding_box()
    cell = box["width"] / 28

    def at(r: int, c: int) -> tuple[float, float]:
        return box["x"] + (c + 0.5) * cell, box["y"] + (r + 0.5) * cell

    ink = image.reshape(28, 28) > 127
    for r in range(28):
        c = 0
        while c < 28:
            if not ink[r, c]:
                c += 1
                continue
            end = c
            while end + 1 < 28 and ink[r, end + 1]:
                end += 1
            page.mouse.move(*at(r, c))
            page.mouse.down()
            page.mouse.move(*at(r, end), steps=max(1, (end - c) // 2))
            page.mouse.up()
            c = end + 1


def swipe(page) -> None:
    """A vertical stroke with one finger (touch events through the DevTools protocol)."""
    box = page.locator("#pad").bounding_box()
    cdp = page.context.new_cdp_session(page)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for k in range(1, 21):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y + k * box["height"] * 0.03}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def open_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def test_a_digit_drawn_in_the_browser_is_read_as_src_predict_reads_it(server, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, run_dir = server
    images = digits(run_dir)
    image = images[int((images > 127).sum(1).argmax())]  # the boldest test digit: easy to trace
    with sync_playwright() as p:
        browser = open_browser(p)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 520}, has_touch=True)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.includes('2 fold')")
            draw(page, image)
            page.wait_for_function("window.lastAnswered !== null && window.lastAnswered === window.lastPixels")
            label = page.locator("#label").inner_text()
            sent = np.array(page.evaluate("window.lastPixels"))
            result = page.evaluate("window.lastResult")
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot))
            page.click("#clear")
            assert page.locator("#label").inner_text() == "\u2013" and page.evaluate("window.lastPixels") is None
            swipe(page)  # a finger draws too
            page.wait_for_function("window.lastAnswered !== null && window.lastAnswered === window.lastPixels")
            assert page.locator("#label").inner_text().isdigit()
        finally:
            browser.close()
    artifacts = REPO / "outputs" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, artifacts / "serve.png")
    assert not errors, errors
    assert label == str(result["label"])
    assert sent.shape == (784,) and sent.min() >= 0 and sent.max() == 255 and np.all(sent == sent.round())
    # MNIST-style: the redrawn digit lands where the original is (both are centred the same way).
    similarity = np.corrcoef(sent, image.astype(float))[0, 1]
    assert similarity > 0.6, similarity

    frame = pd.DataFrame([sent.astype(int)], columns=[f"pixel{i}" for i in range(784)])
    frame.to_csv(tmp_path / "drawn.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "src.predict", f"run_dir={run_dir}", f"input={tmp_path / 'drawn.csv'}",
                           f"output={tmp_path / 'out.csv'}", "probabilities=true"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predicted = pd.read_csv(tmp_path / "out.csv")
    assert str(predicted["Label"].iloc[0]) == label
    np.testing.assert_allclose(predicted[[f"p{c}" for c in range(10)]].to_numpy()[0], result["probabilities"], atol=2e-3)


def test_an_export_is_served_only_when_asked_for(finished_run):
    proc = subprocess.run([sys.executable, "-m", "src.serve", f"run_dir={finished_run}", "version=1"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: version=1 names a SavedModel export: add export=true to serve one"


def test_slow_clients_are_dropped_while_others_are_answered(server):
    """Connections that trickle their headers or body a byte at a time are closed once past
    header_timeout / body_timeout (2 s here), and a normal request is answered meanwhile."""
    url, run_dir = server
    port = int(url.rsplit(":", 1)[1])
    body = values(digits(run_dir)[0].tolist())
    heads = [b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(body)]
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    for s in slow[10:]:  # the second half sends whole headers, then trickles the body
        s.sendall(heads[0])
    start = time.monotonic()
    closed = {}
    while len(closed) < len(slow) and time.monotonic() - start < 10:
        for i, s in enumerate(slow):
            if i in closed:
                continue
            try:
                s.sendall(b"X" if i < 10 else body[:1])
            except OSError:
                closed[i] = time.monotonic() - start
        answer = httpx.post(f"{url}/predict", content=body, headers=JSON, timeout=5)
        assert answer.status_code == 200
        time.sleep(0.3)
    for s in slow:
        s.close()
    assert len(closed) == len(slow) and max(closed.values()) < 6, closed


def test_a_request_for_another_host_is_refused(server):
    """DNS rebinding: a page that made the browser send its own Host name gets a 400 and the log
    says how to allow the name."""
    url, run_dir = server
    answer = httpx.get(f"{url}/health", headers={"Host": "evil.example:8000"}, timeout=5)
    assert answer.status_code == 400 and "evil.example" in answer.json()["error"]
    assert httpx.get(f"{url}/health", headers={"Host": "localhost:8000"}, timeout=5).status_code == 200
    deadline = time.monotonic() + 5
    log = run_dir.parent / "server.log"
    while "allowed_hosts='[" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "refused a request for Host 'evil.example'" in log.read_text()
