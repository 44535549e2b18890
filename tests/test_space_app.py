"""The Space's web app: HTTP routes and the WebSocket protocol (in-process), then a real browser.

The browser test drives headless Debian Chromium (``/usr/bin/chromium``, installed by the test set-up) with
Playwright against the app served by uvicorn on 127.0.0.1 on a free port. It is skipped, with the reason, when
Chromium or the ``playwright`` package is missing.
"""

import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import PIL.Image
import pytest


pytest.importorskip("fastapi", reason="the Space needs the [space] extra (fastapi via gradio)")
pytest.importorskip("gradio", reason="the Space needs the [space] extra (gradio)")

from fastapi.testclient import TestClient  # noqa: E402

from diffusers_yan.space import SessionManager, SpaceConfig, build_app  # noqa: E402

from .test_space_sessions import model_dir, pipe  # noqa: E402, F401  (module fixtures)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def jpeg(size=(40, 70)):
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_http_routes_and_websocket(pipe):  # noqa: F811
    manager = SessionManager({"tiny-sim": pipe}, SpaceConfig(max_fps=0))
    app = build_app(manager, clip_mode=True)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and "play.js" in page.text and 'href="/clip/"' in page.text
        assert client.get("/static/play.js").status_code == 200
        assert client.get("/clip/").status_code == 200  # the Gradio clip mode, same server
        config = client.get("/api/config").json()
        assert config["models"][0]["buttons"] == list(pipe.action_space.buttons)
        assert config["models"][0]["num_start_frames"] == 2
        assert client.get("/api/models/tiny-sim/start-frames/1.png").headers["content-type"] == "image/png"
        assert client.get("/api/models/tiny-sim/start-frames/5.png").status_code == 404
        assert client.get("/api/models/../start-frames/0.png").status_code == 404

        with client.websocket_connect("/ws") as ws:
            ws.send_text(json.dumps({"type": "hello", "model": "tiny-sim"}))
            hello = ws.receive_json()
            sid = hello["session"]
            assert hello["type"] == "hello" and hello["status"] == "ready"

            # upload: a bad file is refused with a message; a good one of another size is accepted
            bad = client.post(f"/api/sessions/{sid}/start-image", content=b"GIF89a-not-really")
            assert bad.status_code == 400 and "not an image" in bad.json()["error"]
            assert client.post(f"/api/sessions/{sid}/start-image", content=jpeg()).json() == {"ok": True}
            assert client.post("/api/sessions/nope/start-image", content=jpeg()).status_code == 400
            assert client.get(f"/api/sessions/{sid}/recording.mp4").status_code == 404

            # keys + step: a frame message, then its n JPEG frames
            ws.send_text(json.dumps({"type": "keys", "keys": ["KeyW"]}))
            ws.send_text(json.dumps({"type": "step"}))
            meta = ws.receive_json()
            assert meta["type"] == "frame" and meta["n"] == pipe.frames_per_action
            frames = [ws.receive_bytes() for _ in range(meta["n"])]
            assert all(f[:2] == b"\xff\xd8" for f in frames)

            # garbage is answered with an error message, and the connection stays usable
            ws.send_text("{not json")
            assert ws.receive_json()["type"] == "error"
            ws.send_text(json.dumps({"type": "keys", "keys": "KeyW"}))
            assert "list" in ws.receive_json()["message"]

            video = client.get(f"/api/sessions/{sid}/recording.mp4")
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            assert len(video.content) > 100

        # the page went away: the world is kept (a reload resumes it) but no longer plays
        assert manager.sessions[sid].listener is None
        with client.websocket_connect("/ws") as ws:
            ws.send_text(json.dumps({"type": "hello", "session": sid}))
            assert ws.receive_json()["session"] == sid
            assert ws.receive_json()["type"] == "frame"  # the last frame, to repaint the page
            assert ws.receive_bytes()[:2] == b"\xff\xd8"


# ---------------------------------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(manager):
    """``manager``'s app served by uvicorn on 127.0.0.1 on a free port, in a thread; yields its URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(manager, clip_mode=False), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def served_app(pipe):  # noqa: F811
    """The tiny Yan-Sim model's app, served; shut down after the test."""
    manager = SessionManager({"tiny-sim": pipe}, SpaceConfig(max_sessions=2, max_fps=15))
    with serving(manager) as url:
        yield url, manager


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    if shutil.which("chromium") is None and not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not executable")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs `pip install playwright`")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _canvas(page) -> str:
    return page.evaluate("document.getElementById('screen').toDataURL()")


def _counter(page) -> int:
    return int(page.text_content("#frame-counter"))


@pytest.mark.timeout(120)
def test_browser_hold_keys_and_two_pages_see_different_worlds(served_app, browser):
    url, manager = served_app
    errors = []
    pages = []
    for _ in range(2):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("window.yan && window.yan.sessionId", timeout=20_000)
        pages.append(page)
    one, two = pages
    assert one.is_hidden("#prompt-box") and one.text_content("#brand") == "Yan-Sim"  # prompts are for Yan-Gen
    ids = [p.evaluate("window.yan.sessionId") for p in pages]
    assert ids[0] != ids[1] and set(ids) <= set(manager.sessions)

    # page one: start, then press and hold W and Left together
    one.click("#play")
    one.wait_for_function("Number(document.getElementById('frame-counter').textContent) > 0", timeout=20_000)
    one.keyboard.down("KeyW")
    one.keyboard.down("ArrowLeft")
    one.wait_for_function(
        "document.getElementById('action').textContent === 'MOVE_FORWARD + TURN_LEFT'", timeout=20_000
    )
    before_frame, before_count = _canvas(one), _counter(one)
    one.wait_for_function(f"Number(document.getElementById('frame-counter').textContent) > {before_count + 4}")
    assert _canvas(one) != before_frame  # the picture changed
    session_one = manager.sessions[ids[0]]
    assert session_one.held_keys == {"KeyW", "ArrowLeft"}
    assert session_one.last_action == ["MOVE_FORWARD", "TURN_LEFT"]
    assert one.text_content("#status") == "playing"
    assert float(one.text_content("#fps")) > 0 and one.text_content("#latency").endswith("ms")
    one.keyboard.up("KeyW")
    one.keyboard.up("ArrowLeft")
    one.wait_for_function("document.getElementById('action').textContent === 'NOOP'", timeout=20_000)

    # page two: its own world, driven by an on-screen button (mouse/touch path)
    two.click("#play")
    two.wait_for_function("Number(document.getElementById('frame-counter').textContent) > 2", timeout=20_000)
    button = two.locator("#pad button[data-button='TURN_RIGHT']")
    button.hover()
    two.mouse.down()
    two.wait_for_function("document.getElementById('action').textContent === 'TURN_RIGHT'", timeout=20_000)
    two.mouse.up()
    assert manager.sessions[ids[1]].frame_count > 0
    assert _canvas(one) != _canvas(two)  # different worlds
    assert manager.sessions[ids[0]].env.state is not manager.sessions[ids[1]].env.state

    # pause stops the counter
    one.click("#play")
    one.wait_for_function("document.getElementById('status').textContent === 'paused'", timeout=20_000)
    paused = _counter(one)
    time.sleep(0.5)
    assert _counter(one) == paused
    assert not errors, errors


def test_yan_play_cli_refuses_bad_arguments(model_dir, capsys):  # noqa: F811
    from diffusers_yan.cli import build_parser, main

    args = build_parser().parse_args(["play"])
    assert (args.host, args.port, args.max_sessions, args.idle_timeout, args.share) == (
        "127.0.0.1",
        7860,
        2,
        300,
        False,
    )
    assert main(["play", "--model", os.path.join(model_dir, "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["play", "--model", model_dir, "--max-sessions", "0"]) == 2
    assert "max_sessions" in capsys.readouterr().err
