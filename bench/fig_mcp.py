"""MCP figure: a ``send`` tool call through ``ppz mcp`` against the IPC ``Send`` it makes.

* ppz: ``ppz mcp --as=alice`` runs as the agent host would start it (a stdio subprocess); this
  process writes one ``tools/call`` ``send`` (128 B to ``bob``) as a JSON-RPC line and reads the
  reply line. Latency: write → reply, so it includes the MCP SDK's framing, validation and
  dispatch, the tool, its IPC ``Send`` and the structured result.
* baseline: the same ``Send`` as one IPC call from this process (``ppz.ipc.call``, what the CLI
  does), same daemon, same stream, same run; blocks alternate.

Target: the MCP layer adds at most 1.5 ms at p50 (``ppz`` − baseline).
"""

from __future__ import annotations

import json
import subprocess

from common import PAYLOAD_SIZE, PPZ_BIN, Rig, Row, clock_ns, log, percentile, stop_process

EXTRA_P50_TARGET_MS = 1.5


class StdioMcp:
    """A ``ppz mcp`` child spoken to in raw JSON-RPC lines (the smallest client there is)."""

    def __init__(self, env: dict[str, str], handle: str) -> None:
        self.proc = subprocess.Popen([PPZ_BIN, "mcp", f"--as={handle}"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.ids = 0
        self.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "bench", "version": "0"}})
        self.write({"method": "notifications/initialized"})

    def write(self, message: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict[str, object]) -> dict[str, object]:
        self.ids += 1
        self.write({"id": self.ids, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            reply = json.loads(self.proc.stdout.readline())
            if reply.get("id") == self.ids:
                if "error" in reply or reply.get("result", {}).get("isError"):
                    raise RuntimeError(f"{method} failed: {reply}")
                return reply["result"]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the host goes away: ppz mcp exits by itself
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)


def run(quick: bool = False) -> list[Row]:
    from ppz import ipc

    blocks, per_block = (2, 100) if quick else (4, 300)
    payload = "x" * PAYLOAD_SIZE
    lat: dict[str, list[float]] = {"mcp": [], "ipc": []}
    with Rig("mcp") as rig:
        mcp = StdioMcp(rig.env(), "alice")
        try:
            arguments = {"name": "send", "arguments": {"to": "bob", "message": payload}}
            params = {"handle": "bob", "channel": "inbox", "bare_target": "bob", "payload": payload,
                      "session": "mcp-alice"}
            for _ in range(20):  # warm both paths (caches, the stream lookup), unmeasured
                mcp.call("tools/call", arguments)
                ipc.call("Send", params, path=rig.socket)
            log(f"mcp: {blocks} × {per_block} send tool calls and IPC Sends, alternating")
            for b in range(blocks):
                for side in (["mcp", "ipc"] if b % 2 == 0 else ["ipc", "mcp"]):
                    for _ in range(per_block):
                        t0 = clock_ns()
                        if side == "mcp":
                            mcp.call("tools/call", arguments)
                        else:
                            ipc.call("Send", params, path=rig.socket)
                        lat[side].append((clock_ns() - t0) / 1e6)
        finally:
            mcp.close()
    p50, b50 = percentile(lat["mcp"], 50), percentile(lat["ipc"], 50)
    p99, b99 = percentile(lat["mcp"], 99), percentile(lat["ipc"], 99)
    return [
        Row("MCP send tool call p50 (stdio)", p50, b50, "ms", target=f"≤ +{EXTRA_P50_TARGET_MS} ms",
            ok=p50 - b50 <= EXTRA_P50_TARGET_MS,
            note=f"{len(lat['mcp'])} calls per side; MCP adds {p50 - b50:.2f} ms; baseline: IPC Send"),
        Row("MCP send tool call p99 (stdio)", p99, b99, "ms", note="(info)"),
    ]
