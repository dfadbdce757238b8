"""Speed of `textgen serve` against the engine under it (issue 16's speed table).

In one run, on this machine (server and clients over loopback):
- the engine's own 64-stream throughput: `textgen sample --num-samples 64` timed at
  --length L and at --length 1 (the difference removes start-up, loading and the prime);
- 1, 8 and 64 concurrent streaming clients of L characters each through the server:
  total characters/s, and median / p99 time to first character;
- the same 64 requests one at a time;
- the server's RSS idle and after each of 3 repetitions of the 64-client round.

Usage (quiet machine; a 2x512 run):
    python benchmarks/serve.py --run big --checkpoints checkpoints
    python benchmarks/serve.py --train 2x512 --train-seconds 120     # trains the run first
    python benchmarks/serve.py --quick                               # smoke test: tiny run, tiny numbers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import ServerProcess, common, rss_mib, tiny_corpus  # noqa: E402


def _train(root: Path, name: str, size: str, seconds: float, corpus: str | None, quick: bool) -> None:
    layers, units = (int(x) for x in size.split("x"))
    args = [sys.executable, "-m", "textgen", "train"]
    if corpus or quick:
        args.append(str(Path(corpus).resolve()) if corpus else str(tiny_corpus(root.parent)))
    args += ["--run", name, "--checkpoints", str(root), "--layers", str(layers), "--units", str(units)]
    args += ["--epochs", "1", "--batch-size", "4", "--seq-len", "10"] if quick else ["--time-limit", str(seconds)]
    subprocess.run(args, check=True, capture_output=True, text=True, cwd=common.REPO)


def engine_throughput(root: Path, run: str, streams: int, length: int) -> float:
    """Characters/s of `textgen sample --num-samples N`, start-up and prime subtracted."""
    def timed(chars: int) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "textgen", "sample", "--run", run, "--checkpoints", str(root),
                        "--num-samples", str(streams), "--length", str(chars), "--seed", "1", "--json"],
                       check=True, capture_output=True, text=True, cwd=common.REPO)
        return time.perf_counter() - start

    fixed = min(timed(1) for _ in range(2))
    full = min(timed(length) for _ in range(2))
    return streams * (length - 1) / max(full - fixed, 1e-3)


def session_throughput(root: Path, run: str, streams: int, length: int) -> float:
    """Characters/s of a SamplingSession stepping `streams` streams in this process (no HTTP)."""
    from textgen.generation.loading import load_run, start_id
    from textgen.generation.session import SamplingSession, StreamSpec

    info, _, engine = load_run(root / run)
    session = SamplingSession(engine, info["vocab"], start_id(info["vocab"]), capacity=streams)
    specs = [StreamSpec(prime="", length=length, temperature=0.8, seed=1, index=i) for i in range(streams)]
    start = time.perf_counter()
    for _ in session.run(specs):
        pass
    seconds = time.perf_counter() - start
    session.close()
    return streams * length / seconds


CLIENT = "raw"  # set by --client


def _tally(blocks: list, start: float, first: float | None) -> tuple[float | None, int]:
    """(time to first character, characters) after complete SSE blocks (str or bytes)."""
    chars = 0
    for block in blocks:
        if block[:7] not in ("data: {", b"data: {"):
            continue
        event = json.loads(block[6:])
        if "error" in event:
            raise RuntimeError(event["error"]["message"])
        got = sum(len(c["text"]) for c in event["choices"])
        if got and first is None:
            first = time.perf_counter() - start
        chars += got
    return first, chars


async def _one(client: httpx.AsyncClient, url: str, model: str, length: int, seed: int) -> tuple[float, int]:
    """One streaming completion: (time to first character, characters received)."""
    if CLIENT == "raw":
        return await _one_raw(url, model, length, seed)
    body = {"model": model, "prompt": "\n", "max_tokens": length, "seed": seed, "temperature": 0.8, "stream": True}
    start = time.perf_counter()
    first, chars, buffer = None, 0, ""
    async with client.stream("POST", url + "/v1/completions", json=body) as answer:
        answer.raise_for_status()
        async for text in answer.aiter_text():
            *blocks, buffer = (buffer + text).split("\n\n")
            first, got = _tally(blocks, start, first)
            chars += got
    return first if first is not None else float("nan"), chars


async def _one_raw(url: str, model: str, length: int, seed: int) -> tuple[float, int]:
    """`_one` over a bare asyncio connection: HTTP/1.1 by hand, the chunked SSE body parsed
    with the standard library. httpx's streaming costs about 0.3 ms of CPU per event here,
    and the clients share the server's two cores: this client leaves more of them to the
    server (what a client on another machine would do)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": model, "prompt": "\n", "max_tokens": length, "seed": seed, "temperature": 0.8,
                       "stream": True}).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (host.encode(), len(body), body))
    first, chars = None, 0
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"HTTP {head[:80]!r}")
        raw, body, ended = b"", b"", False
        while not ended:  # read what has arrived, undo the chunked framing, parse whole events
            block = await reader.read(1 << 16)
            if not block:
                break
            raw += block
            while True:
                line_end = raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(raw[:line_end], 16)
                if size == 0:
                    ended = True
                    break
                if len(raw) < line_end + 2 + size + 2:
                    break
                body += raw[line_end + 2: line_end + 2 + size]
                raw = raw[line_end + 2 + size + 2:]
            *blocks, body = body.split(b"\n\n")
            first, got = _tally(blocks, start, first)
            chars += got
    finally:
        writer.close()
    return first if first is not None else float("nan"), chars


async def concurrent(url: str, model: str, clients: int, length: int, seed: int = 0) -> dict:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(_one(client, url, model, length, seed + i) for i in range(clients)))
        seconds = time.perf_counter() - start
    ttfc = sorted(r[0] for r in results)
    total = sum(r[1] for r in results)
    assert total == clients * length, f"expected {clients * length} characters, got {total}"
    return {"clients": clients, "chars": total, "seconds": seconds, "chars_per_s": total / seconds,
            "ttfc_median_ms": 1000 * statistics.median(ttfc),
            "ttfc_p99_ms": 1000 * ttfc[min(len(ttfc) - 1, int(round(0.99 * (len(ttfc) - 1))))]}


async def sequential(url: str, model: str, count: int, length: int) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        chars = 0
        for i in range(count):
            chars += (await _one(client, url, model, length, 1000 + i))[1]
        seconds = time.perf_counter() - start
    return {"clients": f"{count} one at a time", "chars": chars, "seconds": seconds, "chars_per_s": chars / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="run to serve (default: the one --train makes, else the latest)")
    parser.add_argument("--checkpoints", type=Path, default=Path(os.environ.get("TEXTGEN_CHECKPOINTS", "checkpoints")))
    parser.add_argument("--train", metavar="LxU", help="train a run of this size first (e.g. 2x512)")
    parser.add_argument("--train-seconds", type=float, default=120)
    parser.add_argument("--corpus", help="corpus for --train (default: textgen's default corpus)")
    parser.add_argument("--length", type=int, default=500, help="characters per request")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke test: a tiny run, 2/4 clients, 40 characters")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="raw: asyncio streams and the standard library (light); httpx: httpx's streaming")
    args = parser.parse_args()
    global CLIENT
    CLIENT = args.client

    args.checkpoints = args.checkpoints.resolve()  # the subprocesses run in the checkout (common.REPO)
    step = common.sampling_step()
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.quick:
        args.checkpoints, args.run, args.train = workdir / "checkpoints", "tiny", "1x16"
        args.length, args.clients, args.repetitions = 40, "1,2,4", 1
    if args.train:
        args.run = args.run or f"bench-{args.train}"
        print(f"training {args.run} ({args.train}) ...", flush=True)
        _train(args.checkpoints, args.run, args.train, args.train_seconds, args.corpus, args.quick)
    clients = [int(c) for c in args.clients.split(",")]
    most = max(clients)

    engine = engine_throughput(args.checkpoints, args.run, most, args.length) if args.run else None
    server = ServerProcess(args.checkpoints, args.run, ["--max-streams", str(max(64, most)), "--quiet"])
    rows, rss = [], {}
    try:
        asyncio.run(concurrent(server.url, server.model, 2, 20))  # warm up
        rss["idle"] = rss_mib(server.pid)
        for count in clients:
            rows.append(asyncio.run(concurrent(server.url, server.model, count, args.length)))
        for repetition in range(1, args.repetitions + 1):
            if repetition > 1:
                rows.append(asyncio.run(concurrent(server.url, server.model, most, args.length, seed=repetition * 100)))
            rss[f"after repetition {repetition}"] = rss_mib(server.pid)
        one_by_one = asyncio.run(sequential(server.url, server.model, most, args.length))
    finally:
        server.stop()

    if engine is None:
        engine = engine_throughput(args.checkpoints, server.model, most, args.length)
    in_process = session_throughput(args.checkpoints, server.model, most, args.length)
    best_most = max(r["chars_per_s"] for r in rows if r["clients"] == most)
    print(f"\nrun {server.model}: {args.length} characters per request; server and clients on this machine "
          f"({args.client} client); sampling step: {step}\n")
    print("| clients | chars/s | TTFC median | TTFC p99 |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['chars_per_s']:,.0f} | {r['ttfc_median_ms']:.0f} ms | {r['ttfc_p99_ms']:.0f} ms |")
    print(f"| {one_by_one['clients']} | {one_by_one['chars_per_s']:,.0f} | | |")
    print(f"| engine alone (`textgen sample --num-samples {most}`, start-up subtracted) | {engine:,.0f} | | |")
    print(f"| engine in-process (SamplingSession, {most} streams) | {in_process:,.0f} | | |")
    print(f"\n{most} clients: {best_most / engine:.0%} of the engine's own throughput (target >= 80%), "
          f"{best_most / one_by_one['chars_per_s']:.1f}x the same requests one at a time (target >= 10x)")
    eight = [r for r in rows if r["clients"] == 8]
    if eight:
        print(f"p99 time to first character at 8 clients: {eight[0]['ttfc_p99_ms']:.0f} ms (target <= 100 ms)")
    print("server RSS: " + ", ".join(f"{k} {v:,.1f} MiB" for k, v in rss.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "one_by_one": one_by_one, "engine_chars_per_s": engine,
                                         "session_chars_per_s": in_process, "sampling_step": step,
                                         "rss_mib": rss}, indent=2))


if __name__ == "__main__":
    main()
