"""openpi-compatible websocket policy server (the protocol of openpi's websocket_policy_server.py): existing
robot clients work unchanged.

Protocol, per connection:
    server -> client  binary  msgpack(policy.metadata)                      once, right after the handshake
    client -> server  binary  msgpack-numpy(observation dict)               one request ...
    server -> client  binary  msgpack-numpy({"actions", "policy_timing", "server_timing"})   ... one reply
    on any error      text    the reason (traceback for internal errors), then close 1011
    GET /healthz      HTTP 200 "OK\\n" (no websocket)

Concurrency: the event loop only moves bytes. Decoding a frame and checking the observation
(`policy.prepare`, when the policy has it) run on a small thread pool, and every `policy.infer` on ONE
worker thread (a model is not re-entrant, and one model saturates the cores anyway), so requests from all
connections queue FIFO there while the loop keeps reading and writing for everyone. A slow, stuck or
hostile client only ever costs its own work. An error in one connection closes that connection only.

Memory bounds per connection: frames above `max_frame_bytes` are refused by the websocket layer (close
1009; default: the policy's largest valid observation, `policy.max_request_bytes`), at most
`MAX_QUEUED_FRAMES` frames wait unread (then the socket is not read: TCP backpressure), and a frame may hold
at most `MAX_ITEMS` map / list entries. A reply is checked before it is sent: non-finite actions, or
actions of another shape than the metadata promises, are never sent; the client gets an error instead.

Run programmatically:
    with ServerThread(policy, port=0) as srv:   # port 0 = a free port; srv.port tells which
        ...  # connect to srv.url
or `await PolicyServer(policy).serve_forever()` / `shallowpi serve --policy PATH`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import websockets
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.frames import CloseCode

from shallowpi.errors import UserError
from shallowpi.infer.actions import UnsafeActionError, check_actions
from shallowpi.serve import msgpack_numpy
from shallowpi.serve.obs_mapping import ObservationError

logger = logging.getLogger(__name__)

# openpi's close reason; the client itself only looks at the text frame before it.
INTERNAL_ERROR_REASON = "Internal server error. Traceback included in previous frame."
BAD_REQUEST_REASON = "Invalid request. Reason included in previous frame."
DEFAULT_MAX_FRAME_BYTES = 16 * 2**20  # for policies that do not say how large a request can be
MAX_QUEUED_FRAMES = 2  # per connection: a client pipelining big frames holds at most this many
MAX_ITEMS = 10_000  # map / list entries per frame; an observation has tens


class Policy(Protocol):
    """What the server needs from a policy: `metadata` and `infer`; `prepare` and `max_request_bytes` when
    it has them. Every `ServedPolicy` (serve/served_policy.py: PiPolicy, OnnxPolicy, DummyPolicy) has all."""

    @property
    def metadata(self) -> dict: ...

    def infer(self, obs: dict) -> dict: ...


class BadRequest(UserError):
    """A frame that is not an observation at all (text frame, malformed msgpack, not a map)."""


def _health_check(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None  # go on with the websocket handshake


class PolicyServer:
    def __init__(
        self,
        policy: Policy,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        max_frame_bytes: int | None = None,
        decode_threads: int = 4,
    ) -> None:
        self.policy = policy
        self.host, self.port = host, port
        if max_frame_bytes is None:
            max_frame_bytes = int(getattr(policy, "max_request_bytes", DEFAULT_MAX_FRAME_BYTES))
        if max_frame_bytes <= 0:
            raise UserError(f"max_frame_bytes must be > 0, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        metadata = dict(policy.metadata)
        self._metadata_frame = msgpack_numpy.packb(metadata)  # fixed for the server's life
        chunk, dim = metadata.get("action_chunk"), metadata.get("action_dim")
        self._action_shape = (chunk, dim) if isinstance(chunk, int) and isinstance(dim, int) else None
        self._prepare = getattr(policy, "prepare", None)
        # One inference thread: FIFO queue across all connections, the policy is never called concurrently.
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="shallowpi-infer"
        )
        # Decoding and observation checks: off the event loop, beside the model.
        self._decoder = concurrent.futures.ThreadPoolExecutor(
            max_workers=decode_threads, thread_name_prefix="shallowpi-decode"
        )
        self.requests_served = 0

    # Inference (worker thread) ---------------------------------------------------------------------------
    def _infer(self, obs: dict, queued_at: float) -> dict:
        start = time.monotonic()
        result = self.policy.infer(obs)
        end = time.monotonic()
        if not isinstance(result, dict) or "actions" not in result:
            raise TypeError(f"policy.infer must return a dict with 'actions', got {type(result).__name__}")
        check_actions(result["actions"], self._action_shape)  # nothing unsafe reaches the robot
        result = dict(result)
        result["server_timing"] = {"infer_ms": (end - start) * 1e3, "queue_ms": (start - queued_at) * 1e3}
        return result

    # Connection handling (event loop) --------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        logger.info("connection from %s opened", peer)
        loop = asyncio.get_running_loop()
        prev_total_ms: float | None = None
        try:
            await ws.send(self._metadata_frame)
            while True:
                frame = await ws.recv()
                start = time.monotonic()
                obs = await loop.run_in_executor(self._decoder, self._decode_and_prepare, frame)
                del frame  # the decoded arrays are views of it; nothing else needs it
                reply = await loop.run_in_executor(self._worker, self._infer, obs, start)
                if prev_total_ms is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total_ms
                await ws.send(msgpack_numpy.packb(reply))
                self.requests_served += 1
                prev_total_ms = (time.monotonic() - start) * 1e3
        except websockets.ConnectionClosed as e:
            if e.sent is not None and e.sent.code == CloseCode.MESSAGE_TOO_BIG:
                logger.warning(
                    "refused a frame from %s larger than %d bytes (raise --max-frame-mb if it was valid)",
                    peer,
                    self.max_frame_bytes,
                )
            logger.info("connection from %s closed", peer)
        except UnsafeActionError as e:
            # The model's fault, not the client's: the robot gets a reason, never the actions.
            logger.error("refused to send unsafe actions to %s: %s", peer, e)
            await self._fail(ws, f"{type(e).__name__}: {e}", INTERNAL_ERROR_REASON)
        except (BadRequest, ObservationError) as e:
            # The client's fault: a one-line reason is more useful to a robot operator than our traceback.
            logger.warning("bad request from %s: %s", peer, e)
            await self._fail(ws, f"{type(e).__name__}: {e}", BAD_REQUEST_REASON)
        except Exception:
            logger.exception("inference failed for %s", peer)
            await self._fail(ws, traceback.format_exc(), INTERNAL_ERROR_REASON)

    def _decode_and_prepare(self, frame: str | bytes) -> Any:
        obs = self._decode(frame)
        return self._prepare(obs) if self._prepare is not None else obs

    @staticmethod
    def _decode(frame: str | bytes) -> dict:
        if isinstance(frame, str):
            raise BadRequest("expected a binary msgpack frame, got a text frame")
        try:
            obs = msgpack_numpy.unpackb(frame, max_items=MAX_ITEMS)
        except ValueError as e:
            raise BadRequest(str(e)) from e
        if not isinstance(obs, dict):
            raise BadRequest(f"observation must be a msgpack map, got {type(obs).__name__}")
        return obs

    @staticmethod
    async def _fail(ws: ServerConnection, text: str, reason: str) -> None:
        """openpi's error convention: the reason as a TEXT frame, then close with 1011."""
        try:
            await ws.send(text)
            await ws.close(code=CloseCode.INTERNAL_ERROR, reason=reason)
        except websockets.ConnectionClosed:
            pass  # the client left first; nothing more to tell it

    # Lifecycle -------------------------------------------------------------------------------------------
    async def serve_forever(
        self, stop: asyncio.Event | None = None, on_ready: Callable[[int], Any] | None = None
    ) -> None:
        """Serve until `stop` is set (or forever). `on_ready(port)` is called once listening."""
        try:
            async with serve(
                self._handler,
                self.host,
                self.port,
                compression=None,  # as openpi: frames are mostly incompressible image bytes
                max_size=self.max_frame_bytes,
                max_queue=MAX_QUEUED_FRAMES,
                process_request=_health_check,
            ) as server:
                port = next(iter(server.sockets)).getsockname()[1]
                logger.info(
                    "serving on ws://%s:%d (health check: http://%s:%d/healthz)",
                    self.host,
                    port,
                    self.host,
                    port,
                )
                if on_ready is not None:
                    on_ready(port)
                await (stop.wait() if stop is not None else server.serve_forever())
        finally:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._decoder.shutdown(wait=True, cancel_futures=True)


class ServerThread:
    """A PolicyServer on its own event loop in a background thread (tests, benchmarks, notebooks)."""

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        self.server = PolicyServer(policy, host, port, **kwargs)
        self.host = host
        self.port: int | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shallowpi-server", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.serve_forever(self._stop, on_ready=self._set_port)

        try:
            asyncio.run(main())
        except BaseException as e:  # surfaced by start() if it happens before the server is ready
            self._error = e
            self._ready.set()

    def _set_port(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None or self.port is None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
