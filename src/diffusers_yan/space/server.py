"""The Yan Space's web app: a FastAPI app with the game page, its WebSocket, and a Gradio clip mode beside it.

Routes (all on one server, one port):

- ``/``: the game page (static HTML + JS). Its JS sends the held keys up and draws the JPEG frames coming down a
  WebSocket: Gradio has no key-event component, and polling with ``every=`` caps play at a few frames/s.
- ``/ws``: the WebSocket. Text messages up (JSON: ``hello``, ``keys``, ``play``, ``pause``, ``step``, ``reset``,
  ``bindings``, ``record``, and for Yan-Gen models ``prompt``); down, JSON ``status``/``frame``/``error`` messages,
  each ``frame`` message followed by its ``n`` frames as binary JPEG messages (all the frames of one model call:
  one Yan-Sim action's, or one Yan-Gen block's, which the page spreads over the time until the next call).
- ``/api/config``, ``/api/models/{model}/start-frames/{i}.png``, ``POST /api/sessions/{id}/start-image`` (the raw
  image bytes as the body), ``GET /api/sessions/{id}/recording.mp4``.
- ``/clip``: a Gradio Blocks app for request/response play ("play these actions, get the clip"), the mode for
  shared-GPU (ZeroGPU) Spaces where no GPU is held between calls.
"""

import asyncio
import contextlib
import json
import os
from pathlib import Path

from diffusers.utils import logging
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask

from .sessions import MAX_UPLOAD_BYTES, SessionManager, SpaceError


logger = logging.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CLIP_PATH = "/clip"
# A page's text messages are small (a list of held keys, a keymap); anything bigger is not from our page.
MAX_MESSAGE_CHARS = 16_384


def build_app(manager: SessionManager, clip_mode: bool = True):
    """Build the FastAPI app serving ``manager``'s sessions (and the Gradio clip mode at ``/clip``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await manager.shutdown()

    app = FastAPI(title="Yan Space", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.manager = manager

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{CLIP_PATH}}", CLIP_PATH if clip_mode else ""))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/config")
    async def config():
        return {**manager.public_config(), "clip_path": CLIP_PATH if clip_mode else None}

    @app.get("/api/models/{model}/start-frames/{index}.png")
    async def start_frame(model: str, index: int):
        try:
            path = manager.start_frame_path(model, index)  # an index into the model's list: no path from the client
        except SpaceError as e:
            return error(str(e), 404)
        return FileResponse(path, media_type="image/png")

    @app.post("/api/sessions/{session_id}/start-image")
    async def upload_start_image(session_id: str, request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            return error(f"The upload is larger than {MAX_UPLOAD_BYTES // 2**20} MiB.", 413)
        data = bytearray()
        async for chunk in request.stream():  # read at most the limit, whatever the header said
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                return error(f"The upload is larger than {MAX_UPLOAD_BYTES // 2**20} MiB.", 413)
        try:
            manager.set_start_image(session_id, bytes(data))
        except SpaceError as e:
            return error(str(e))
        return {"ok": True}

    @app.get("/api/sessions/{session_id}/recording.mp4")
    async def recording(session_id: str):
        try:
            path = await manager.export_recording(session_id)
        except SpaceError as e:
            return error(str(e), 404)
        return FileResponse(
            path,
            media_type="video/mp4",
            filename="yan-session.mp4",
            background=BackgroundTask(os.remove, path),
        )

    @app.websocket("/ws")
    async def websocket(ws: WebSocket):
        await ws.accept()
        session_id = None
        send_lock = asyncio.Lock()  # a frame's meta and its JPEGs go out together, never interleaved

        async def listener(meta: dict, frames: list) -> None:
            async with send_lock:
                await ws.send_text(json.dumps(meta))
                for frame in frames:
                    await ws.send_bytes(frame)

        try:
            hello = await _receive_json(ws)
            if not isinstance(hello, dict) or hello.get("type") != "hello":
                await ws.send_text(json.dumps({"type": "error", "message": 'The first message must be "hello".'}))
                return
            try:
                session = manager.open(hello.get("session"), hello.get("model"))
                if hello.get("bindings"):
                    manager.set_bindings(session.id, hello["bindings"])
            except SpaceError as e:
                await ws.send_text(json.dumps({"type": "error", "message": str(e), "fatal": True}))
                return
            session_id = session.id
            manager.attach(session_id, listener)
            await listener({**session.snapshot(), "type": "hello"}, [])
            if session.last_frames:
                await listener({"type": "frame", "frame_index": session.frame_count, "n": 1}, session.last_frames[-1:])
            while True:
                message = await _receive_json(ws)
                try:
                    if message is None:
                        raise SpaceError("Messages must be JSON objects of at most 16 KiB.")
                    await manager.handle(session_id, message)
                except SpaceError as e:
                    await listener({"type": "error", "message": str(e)}, [])
        except WebSocketDisconnect:
            pass
        finally:
            if session_id is not None:
                await manager.detach(session_id, listener)

    if clip_mode:
        import gradio as gr

        from .clip import build_clip_blocks

        app = gr.mount_gradio_app(app, build_clip_blocks(manager), path=CLIP_PATH, footer_links=[])
    return app


async def _receive_json(ws):
    """The next text message as JSON, or ``None`` if it is too long or not JSON (binary messages are ignored)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            continue
        if len(text) > MAX_MESSAGE_CHARS:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None
