"""Load-generator and follower subprocesses for the benchmarks (one process per client).

Usage: ``python bench/worker.py KIND [ARGS]``; configuration comes from the ``BENCH_*``
environment variables set by :meth:`common.Rig.env`. Every worker talks one JSON object per
line on stdout:

* request/response workers (``ipc-send N WARMUP SIZE``, ``ipc-status …``, ``ipc-floor …``,
  ``nats-publish …``,
  ``nats-publish-concurrent COROUTINES N WARMUP SIZE``, ``ipc-batch BATCHES COUNT SIZE``,
  ``nats-batch …``) print ``{"ready": …}``, wait for ``go`` on
  stdin, run, and print ``{"result": …}``;
* follow workers (``ppz-follow N``, ``nats-follow N``: N followers of ``BENCH_SUBJECT``) print
  ``{"ready": N}`` once their subscriptions were requested, ``{"warm": N}`` once every follower
  received a ``warm`` message, ``{"broadcast": …}`` per ``b:<id>:<ns>`` message (when all N have
  it, or after ``BENCH_BROADCAST_DEADLINE`` seconds, default 3), and ``{"result": …}`` once
  every follower received ``stop``;
* ``nats-idle`` prints ``{"ready": …}`` once connected and then idles until stdin closes.

Timestamps are CLOCK_MONOTONIC nanoseconds, shared by all processes of the machine. Any failure
is reported as ``{"error": "…"}`` and exit status 1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import selectors
import socket
import sys
import time
import traceback
from typing import Any

ENV = os.environ


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def wait_go() -> None:
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(0)  # parent went away


def payload(size: int) -> str:
    return ("0123456789abcdef" * (size // 16 + 1))[:size]


def envelope_body(text: str) -> bytes:
    """An encoded ppz envelope carrying ``text`` (what the daemon would publish)."""
    from ppz.envelope import new_envelope

    return new_envelope(sender="bench", payload=text).encode()


# --- ppz IPC clients -----------------------------------------------------------------------------


def ipc_send(n: int, warmup: int, size: int, *, method: str = "Send") -> None:
    """``n`` sequential ``Send`` calls, or ``Status`` (a handler on a thread, with two actor
    round trips), or ``Floor``: a verb the daemon does not know, answered with its error on the
    event loop (connect, request line, decoding, validation, reply, close: the IPC floor)."""
    from ppz import errors, ipc

    sock = ENV["BENCH_SOCKET"]
    params: dict[str, Any] = {"handle": ENV["BENCH_HANDLE"], "channel": "inbox", "payload": payload(size),
                              "session": ENV["BENCH_SESSION"]}
    if method != "Send":
        params = {"session": ENV["BENCH_SESSION"]}

    def call() -> None:
        try:
            ipc.call(method, params, path=sock)
        except errors.PpzError as exc:
            if method != "Floor" or exc.code != errors.E_PROTOCOL:
                raise

    for _ in range(warmup):
        call()
    emit({"ready": True})
    wait_go()
    lat = []
    start = now_ns()
    for _ in range(n):
        t0 = now_ns()
        call()
        lat.append(now_ns() - t0)
    end = now_ns()
    emit({"result": {"n": n, "start": start, "end": end, "lat_ns": lat}})


def ipc_batch(batches: int, count: int, size: int) -> None:
    from ppz import ipc

    sock = ENV["BENCH_SOCKET"]
    params = {"handle": ENV["BENCH_HANDLE"], "channel": "inbox", "payloads": [payload(size)] * count,
              "session": ENV["BENCH_SESSION"]}
    reply = ipc.call("SendBatch", params, path=sock)  # warm-up
    assert len(reply["ids"]) == count, reply
    emit({"ready": True})
    wait_go()
    elapsed = []
    for _ in range(batches):
        t0 = now_ns()
        reply = ipc.call("SendBatch", params, path=sock)
        elapsed.append(now_ns() - t0)
        assert len(reply["ids"]) == count
    emit({"result": {"count": count, "elapsed_ns": elapsed}})


# --- raw nats-py clients ---------------------------------------------------------------------------


def sign(seed: str, nonce: str) -> bytes:
    import nkeys

    return base64.b64encode(nkeys.from_seed(bytearray(seed.encode())).sign(nonce.encode()))


async def nats_connect() -> Any:
    import nats

    jwt, seed = ENV["BENCH_NATS_JWT"], ENV["BENCH_NATS_SEED"]
    return await nats.connect(ENV["BENCH_NATS_URL"], user_jwt_cb=lambda: jwt.encode(),
                              signature_cb=lambda nonce: sign(seed, nonce), allow_reconnect=False,
                              connect_timeout=5)


async def wait_go_async() -> None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(0)


async def nats_publish(n: int, warmup: int, size: int) -> None:
    nc = await nats_connect()
    try:
        js = nc.jetstream()
        subject = ENV["BENCH_SUBJECT"]
        body = envelope_body(payload(size))
        for _ in range(warmup):
            await js.publish(subject, body)
        emit({"ready": True})
        await wait_go_async()
        lat = []
        start = now_ns()
        for _ in range(n):
            t0 = now_ns()
            await js.publish(subject, body)
            lat.append(now_ns() - t0)
        end = now_ns()
        emit({"result": {"n": n, "start": start, "end": end, "lat_ns": lat}})
    finally:
        await nc.close()


async def nats_publish_concurrent(coroutines: int, n: int, warmup: int, size: int) -> None:
    """One connection, ``coroutines`` concurrent publishers of ``n`` messages each, every publish
    awaiting its PubAck: what one daemon's single connection can do for concurrent clients."""
    nc = await nats_connect()
    try:
        js = nc.jetstream()
        subject = ENV["BENCH_SUBJECT"]
        body = envelope_body(payload(size))

        async def publisher(count: int, lat: list[int]) -> None:
            for _ in range(count):
                t0 = now_ns()
                await js.publish(subject, body)
                lat.append(now_ns() - t0)

        await asyncio.gather(*(publisher(warmup, []) for _ in range(coroutines)))
        emit({"ready": True})
        await wait_go_async()
        lats: list[list[int]] = [[] for _ in range(coroutines)]
        start = now_ns()
        await asyncio.gather(*(publisher(n, lat) for lat in lats))
        end = now_ns()
        emit({"result": {"n": n * coroutines, "start": start, "end": end, "lat_ns": [x for lat in lats for x in lat]}})
    finally:
        await nc.close()


async def nats_batch(batches: int, count: int, size: int) -> None:
    nc = await nats_connect()
    try:
        js = nc.jetstream()
        subject = ENV["BENCH_SUBJECT"]
        # The same bodies the daemon would publish: one encoded envelope per message.
        bodies = [envelope_body(payload(size)) for _ in range(count)]

        async def one_batch() -> None:
            futs = [await js.publish_async(subject, body) for body in bodies]
            acks = await asyncio.wait_for(asyncio.gather(*futs), 10)
            assert len(acks) == count and all(a.seq for a in acks)

        await one_batch()  # warm-up
        emit({"ready": True})
        await wait_go_async()
        elapsed = []
        for _ in range(batches):
            t0 = now_ns()
            await one_batch()
            elapsed.append(now_ns() - t0)
        emit({"result": {"count": count, "elapsed_ns": elapsed}})
    finally:
        await nc.close()


async def nats_idle() -> None:
    nc = await nats_connect()
    try:
        emit({"ready": True})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await nc.close()


# --- followers -------------------------------------------------------------------------------------


class Tracker:
    """Counts what a set of ``n`` followers received, from message payloads:

    ``warm`` (until every follower saw one), ``t:<ns>`` (latency sample), ``b:<id>:<ns>``
    (broadcast: report once all ``n`` followers got it, or after 3 s), ``stop``.
    """

    # How long a broadcast may take to reach every follower before it is reported as is
    # (BENCH_BROADCAST_DEADLINE seconds, default 3).
    BROADCAST_DEADLINE_NS = int(float(ENV.get("BENCH_BROADCAST_DEADLINE", "3")) * 1e9)

    def __init__(self, n: int) -> None:
        self.n = n
        self.warm: set[int] = set()
        self.warm_reported = False
        self.lat: list[int] = []
        self.broadcasts: dict[str, dict[str, Any]] = {}
        self.stopped: set[int] = set()

    def on_payload(self, follower: int, text: str) -> None:
        now = now_ns()
        if text == "warm":
            if not self.warm_reported:
                self.warm.add(follower)
                if len(self.warm) == self.n:
                    self.warm_reported = True
                    emit({"warm": self.n})
        elif text.startswith("t:"):
            self.lat.append(now - int(text[2:]))
        elif text.startswith("b:"):
            _, bid, sent = text.split(":")
            b = self.broadcasts.setdefault(bid, {"sent": int(sent), "lat": {}, "done": False})
            b["lat"].setdefault(follower, now - int(sent))
            if not b["done"] and len(b["lat"]) == self.n:
                self.report(bid)
        elif text == "stop":
            self.stopped.add(follower)

    def report(self, bid: str) -> None:
        b = self.broadcasts[bid]
        b["done"] = True
        lat = sorted(b["lat"].values())
        emit({"broadcast": bid, "received": len(lat), "of": self.n,
              "max_ns": lat[-1] if lat else None, "p50_ns": lat[len(lat) // 2] if lat else None})

    def check_deadlines(self) -> None:
        now = now_ns()
        for bid, b in self.broadcasts.items():
            if not b["done"] and now - b["sent"] > self.BROADCAST_DEADLINE_NS:
                self.report(bid)

    @property
    def done(self) -> bool:
        return len(self.stopped) == self.n

    def result(self) -> None:
        emit({"result": {"lat_ns": self.lat}})


def ipc_read_request(session: str) -> bytes:
    from ppz import ipc

    return ipc.encode_request("Read", {"handle": ENV["BENCH_HANDLE"], "channel": "inbox", "follow": True,
                                       "sender": "bench-reader", "session": session})


def connect_unix(path: str) -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:  # listen backlog full: the daemon is busy accepting
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def ppz_follow(n: int) -> None:
    """``n`` follow connections (``Read`` with ``follow``), one session each, multiplexed."""
    path = ENV["BENCH_SOCKET"]
    sel = selectors.DefaultSelector()
    bufs: dict[int, bytearray] = {}
    socks = []
    for i in range(n):
        sock = connect_unix(path)
        sock.sendall(ipc_read_request(f"{ENV['BENCH_SESSION']}-f{i}"))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        bufs[i] = bytearray()
        socks.append(sock)
    emit({"ready": n})
    tracker = Tracker(n)
    open_count = n
    while not tracker.done and open_count:
        for key, _ in sel.select(0.1):
            i = key.data
            sock = socks[i]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(sock)
                open_count -= 1
                raise RuntimeError(f"follow {i} closed by the daemon")
            buf = bufs[i]
            buf += chunk
            while (end := buf.find(b"\n")) >= 0:
                event = json.loads(bytes(buf[:end]))
                del buf[: end + 1]
                if "error" in event:
                    raise RuntimeError(f"follow {i}: {event['error']}")
                msg = event.get("msg")
                if msg is not None:
                    tracker.on_payload(i, msg["payload"])
        tracker.check_deadlines()
    tracker.result()
    for sock in socks:
        sock.close()


async def nats_follow(n: int) -> None:
    """``n`` raw nats-py ordered consumers on one connection (the daemon also has one)."""
    from nats.js.api import DeliverPolicy

    nc = await nats_connect()
    try:
        js = nc.jetstream()
        tracker = Tracker(n)
        done = asyncio.Event()

        def handler(i: int) -> Any:
            async def cb(msg: Any) -> None:
                tracker.on_payload(i, json.loads(msg.data)["payload"])
                if tracker.done:
                    done.set()
            return cb

        for i in range(n):
            await js.subscribe(ENV["BENCH_SUBJECT"], stream=ENV["BENCH_STREAM"], cb=handler(i),
                               ordered_consumer=True, idle_heartbeat=1.0, deliver_policy=DeliverPolicy.NEW)
        emit({"ready": n})
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), 0.1)
            except TimeoutError:
                tracker.check_deadlines()
        tracker.result()
    finally:
        await nc.close()


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    kind, args = argv[0], [int(a) for a in argv[1:]]
    if kind == "ipc-send":
        ipc_send(*args)
    elif kind == "ipc-status":
        ipc_send(*args, method="Status")
    elif kind == "ipc-floor":
        ipc_send(*args, method="Floor")
    elif kind == "ipc-batch":
        ipc_batch(*args)
    elif kind == "nats-publish":
        asyncio.run(nats_publish(*args))
    elif kind == "nats-publish-concurrent":
        asyncio.run(nats_publish_concurrent(*args))
    elif kind == "nats-batch":
        asyncio.run(nats_batch(*args))
    elif kind == "nats-idle":
        asyncio.run(nats_idle())
    elif kind == "ppz-follow":
        ppz_follow(*args)
    elif kind == "nats-follow":
        asyncio.run(nats_follow(*args))
    else:
        raise SystemExit(f"unknown worker kind {kind}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        traceback.print_exc()
        emit({"error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from None
