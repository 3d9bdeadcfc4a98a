"""The server of ``wm-video play``: one page, and one websocket that streams predicted frames at the model's fps.

    GET /        the page (``page.html``)
    GET /info    the controls, start states, policies and settings, as JSON
    WS  /ws      the page sends what is held and what it wants; the server answers with frames

Messages from the page (JSON): ``{"type": "input", "held": ["ArrowUp", " "], "sliders": [0.5], "id": 7}`` (what
is held now; ``id`` comes back with the first frame made from it, so the page can time a key press to its frame),
``{"type": "reset", "start": 3}`` (``null``: a random start), ``{"type": "pause", "paused": true}``,
``{"type": "control", "who": "random"}``, ``{"type": "settings", "temperature": 0.5, "decoder_steps": 2}``.

Messages to the page: ``{"type": "frame", "image": "data:image/png;base64,...", "step", "action", "reward",
"return", "termination", "ended", "model_ms", "input_id", "unmapped"}``, ``{"type": "recorded", "video", "shard",
"frames", "clips"}`` when a play-through was written, and ``{"type": "error", "message"}``.

The world model runs in a worker thread, one frame at a time, so the page stays responsive; a frame that takes
longer than ``1 / fps`` delays the next one (the page shows the fps it gets). One page plays at a time: a second
connection shares the same episode.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the websocket handler's annotations at run time, and
# its types are imported inside create_app (fastapi is the play extra, not a core dependency).
import asyncio
import base64
import contextlib
import dataclasses
import errno
import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

from PIL import Image

from wm_video.play.session import PlaySession

log = logging.getLogger(__name__)


def png_data_url(image: Any) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def frame_message(frame: Any, input_id: int | None, unmapped: list[str]) -> dict[str, Any]:
    return {"type": "frame", "image": png_data_url(frame.image), "step": frame.step, "action": frame.action,
            "reward": frame.reward, "return": frame.episode_return, "termination": frame.termination,
            "ended": frame.ended, "model_ms": round(frame.model_ms, 2), "input_id": input_id, "unmapped": unmapped}


def recorded_message(rec: Any) -> dict[str, Any]:
    return {"type": "recorded", **dataclasses.asdict(rec)}


def check_port_free(host: str, port: int) -> None:
    """A clear error before anything is loaded when ``host:port`` is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"--port {port}: {host}:{port} is already in use; choose another port") from e
            raise ValueError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from e


class Player:
    """The state the websocket loop keeps for the session: what is held, paused, and the lock around the model."""

    def __init__(self, session: PlaySession) -> None:
        self.session = session
        self.held: list[str] = []
        self.sliders: list[float] | None = None
        self.input_id: int | None = None
        self.paused = False
        self.lock = threading.Lock()

    def step(self) -> list[dict[str, Any]]:
        """One frame (in a worker thread) -> the messages to send."""
        with self.lock:
            held, input_id = list(self.held), self.input_id
            frame = self.session.step(held, self.sliders)
            out = [frame_message(frame, input_id, self.session.controls.unmapped(held))]
            if frame.recording is not None:
                out.append(recorded_message(frame.recording))
            if frame.ended:  # a new play-through starts from the same menu choice
                out.append(frame_message(self.session.reset(self.session.start_index), None, []))
        return out

    def handle(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        """One message from the page -> the messages to send back (in a worker thread)."""
        kind = msg.get("type")
        with self.lock:
            if kind == "input":
                held = msg.get("held") or []
                if not isinstance(held, list) or not all(isinstance(k, str) for k in held):
                    raise ValueError("input: field 'held' must be a list of key names")
                self.held = held
                self.sliders = msg.get("sliders")
                self.input_id = msg.get("id")
                return []
            if kind == "reset":
                start = msg.get("start")
                frame = self.session.reset(None if start is None else int(start))
                return [*([recorded_message(frame.recording)] if frame.recording else []),
                        frame_message(frame, None, [])]
            if kind == "pause":
                self.paused = bool(msg.get("paused"))
                return []
            if kind == "control":
                self.session.set_controller(str(msg.get("who")))
                return []
            if kind == "settings":
                steps = msg.get("decoder_steps")
                temperature = msg.get("temperature")
                self.session.set_sampling(None if temperature is None else float(temperature),
                                          None if steps is None else int(steps))
                return []
        raise ValueError(f"unknown message type {kind!r}")


def create_app(session: PlaySession) -> Any:
    """The FastAPI app serving ``session``."""
    from fastapi import FastAPI, WebSocket, WebSocketDisconnect
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="wm-video play")
    player = Player(session)
    page = resources.files("wm_video.play").joinpath("page.html").read_text()

    @app.get("/")
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/info")
    def info() -> JSONResponse:
        return JSONResponse(session.describe())

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def receive() -> None:
            try:
                while True:
                    await inbox.put(await websocket.receive_json())
            except (WebSocketDisconnect, RuntimeError):
                await inbox.put(None)

        async def send(messages: list[dict[str, Any]]) -> None:
            for m in messages:
                await websocket.send_json(m)

        reader = asyncio.create_task(receive())
        loop = asyncio.get_running_loop()
        try:
            first = await asyncio.to_thread(player.handle, {"type": "reset", "start": session.start_index})
            await send(first)
            next_tick = loop.time() + 1 / session.fps
            while True:
                msg = await _next_message(inbox, next_tick - loop.time())
                if msg is None:  # the page went away
                    break
                if msg:
                    try:
                        await send(await asyncio.to_thread(player.handle, msg))
                    except (ValueError, TypeError) as e:
                        await send([{"type": "error", "message": str(e)}])
                    continue
                next_tick = max(next_tick + 1 / session.fps, loop.time())
                if not player.paused:
                    await send(await asyncio.to_thread(player.step))
        except WebSocketDisconnect:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(_finish, player)

    return app


async def _next_message(inbox: asyncio.Queue, wait: float) -> dict[str, Any] | None:
    """The next message from the page, waiting at most ``wait`` seconds ({} when none came). Messages already
    waiting are taken first, so a world model slower than the fps clock still reads every key press at once."""
    try:
        return inbox.get_nowait()
    except asyncio.QueueEmpty:
        if wait <= 0:
            return {}
    try:
        return await asyncio.wait_for(inbox.get(), wait)
    except asyncio.TimeoutError:
        return {}


def _finish(player: Player) -> None:
    with player.lock:
        rec = player.session.finish()
        if rec is not None:
            log.info("recorded %s (%d frames)", rec.video, rec.frames)


def serve(session: PlaySession, host: str, port: int) -> None:
    """Serve the page until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.run(create_app(session), host=host, port=port, log_level="warning")


@contextlib.contextmanager
def running(session: PlaySession, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
            ) -> Iterator[str]:
    """Serve the page in a background thread (tests, benchmarks): yields its URL; stops on leaving. ``port`` 0
    takes a free one."""
    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(session), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="wm-video-play", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the play server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
