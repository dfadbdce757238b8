"""The attacks of issue 30 against `textgen serve`, for serve_reliability.py: each runs on a fresh
server so that its RSS figures are its own.

1. slow readers: C clients send a streaming request (n, max_tokens, logprobs) on a raw socket
   with a small receive window and never read. Measured: the server's RSS (before, its peak
   while they hang, after they are gone), its unsent-output gauge, and a normal client's time
   to first character and whole answer, sent right after the attackers (it queues behind
   them) and again once they have all stalled.
2. prompt flood: P requests at the prompt limit with n, echo and logprobs, all at once; a
   one-character streaming request sent while their prompts are fed: its time to first
   character. A prompt one character over the limit must still get its 400.
3. slow headers: H clients send a request's headers one byte a second; how long until the
   server drops each (its header timeout), and what it answered.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
from serve_common import TINY_TEXT, ServerProcess, rss_mib


class RssWatch:
    """The server's RSS sampled every 0.2 s in a thread: `peak` so far."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, rss_mib(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_mib(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak, 1)


def _stalled_client(port: int, body: dict) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    return sock


def normal_client(server: ServerProcess, max_tokens: int = 200) -> dict:
    """A streaming request read at once: seconds to its first character and to its end."""
    started = time.monotonic()
    first, text = None, ""
    with httpx.stream("POST", server.url + "/v1/completions", timeout=600, json={
            "model": server.model, "prompt": "", "max_tokens": max_tokens, "stream": True}) as answer:
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            piece = "".join(c.get("text", "") for c in event.get("choices", []))
            if piece and first is None:
                first = time.monotonic() - started
            text += piece
    return {"ttfc_s": round(first, 3) if first is not None else None, "whole_s": round(time.monotonic() - started, 3),
            "characters": len(text), "complete": len(text) == max_tokens}


def slow_readers(checkpoints: Path, run: str | None, clients: int, n: int, max_tokens: int, logprobs: int,
                 settle_timeout: float = 120.0) -> dict:
    server = ServerProcess(checkpoints, run, ["--quiet", "--max-length", str(max(max_tokens, 4096))])
    try:
        before = rss_mib(server.pid)
        watch = RssWatch(server.pid)
        started = time.monotonic()
        sockets = [_stalled_client(server.port, {"model": server.model, "prompt": "", "n": n, "max_tokens": max_tokens,
                                                 "logprobs": logprobs, "stream": True, "seed": i})
                   for i in range(clients)]
        behind = normal_client(server)  # sent right after them: it queues behind whatever they still run
        # Settled: nothing queued or stepping (every attacker paused, or cancelled by the send timeout).
        settled = None
        while time.monotonic() - started < settle_timeout:
            if server.metric("textgen_queue_length") == 0 and server.metric("textgen_active_streams") == 0:
                settled = round(time.monotonic() - started, 1)
                break
            time.sleep(0.2)
        held = {"paused_streams": server.metric("textgen_paused_streams"),
                "unsent_output_mib": round(server.metric("textgen_unsent_output_bytes") / 2**20, 2),
                "send_timeouts_so_far": server.metric("textgen_send_timeouts_total"),
                "rss_mib": round(rss_mib(server.pid), 1)}
        steady = normal_client(server)
        for sock in sockets:
            sock.close()
        deadline = time.monotonic() + 60
        while server.metric("textgen_paused_streams") and time.monotonic() < deadline:
            time.sleep(0.2)
        peak = watch.stop()
        return {"clients": clients, "n": n, "max_tokens": max_tokens, "logprobs": logprobs,
                "rss_before_mib": round(before, 1), "rss_peak_mib": peak, "rss_growth_mib": round(peak - before, 1),
                "settled_after_s": settled, "while_stalled": held, "normal_sent_with_them": behind,
                "normal_once_stalled": steady, "paused_after_close": server.metric("textgen_paused_streams"),
                "rss_after_close_mib": round(rss_mib(server.pid), 1)}
    finally:
        server.stop()


def _prompt(vocab: list, length: int, offset: int) -> str:
    """`length` characters of the play text, limited to the run's vocabulary."""
    allowed = set(vocab)
    text = "".join(c for c in TINY_TEXT if c in allowed) or "".join(vocab)
    return (text * (length // len(text) + 2))[offset: offset + length]


def prompt_flood(checkpoints: Path, run: str | None, prompts: int, n: int, logprobs: int, max_prompt: int) -> dict:
    import asyncio

    server = ServerProcess(checkpoints, run, ["--quiet", "--max-prompt", str(max_prompt)])
    vocab = json.loads((Path(checkpoints) / server.model / "run.json").read_text(encoding="utf-8"))["vocab"]
    try:
        over = httpx.post(server.url + "/v1/completions", timeout=60, json={
            "model": server.model, "prompt": _prompt(vocab, max_prompt + 1, 0), "max_tokens": 1})
        before = rss_mib(server.pid)
        watch = RssWatch(server.pid)

        async def flood():
            async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=prompts + 4)) as client:
                async def big(i):
                    started = time.monotonic()
                    answer = await client.post(server.url + "/v1/completions", json={
                        "model": server.model, "prompt": _prompt(vocab, max_prompt, 7 * i), "n": n, "echo": True,
                        "logprobs": logprobs, "max_tokens": 16})
                    return answer.status_code, len(answer.content), round(time.monotonic() - started, 2)

                async def metric(name):
                    text = (await client.get(server.url + "/metrics")).text
                    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                               if line.startswith((name + "{", name + " ")))

                async def small():
                    deadline = time.monotonic() + 60
                    while await metric("textgen_prompt_characters_fed_total") == 0 and time.monotonic() < deadline:
                        await asyncio.sleep(0.005)  # until the flood's prompts are being fed
                    waiting = await metric("textgen_prompt_characters_waiting")  # 0: the flood was fed already
                    started = time.monotonic()
                    async with client.stream("POST", server.url + "/v1/completions", json={
                            "model": server.model, "prompt": "", "max_tokens": 1, "stream": True}) as answer:
                        async for line in answer.aiter_lines():
                            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                                return round(time.monotonic() - started, 3), waiting
                    return None, waiting

                return await asyncio.gather(small(), *(big(i) for i in range(prompts)))

        (ttfc, waiting), *bigs = asyncio.run(flood())
        return {"prompts": prompts, "prompt_characters": max_prompt, "n": n, "logprobs": logprobs,
                "one_character_ttfc_s": ttfc, "prompt_characters_waiting_when_sent": waiting,
                "flood_answers": [{"status": s, "mib": round(b / 2**20, 1), "seconds": t} for s, b, t in bigs],
                "over_limit_status": over.status_code, "over_limit_message": over.json()["error"]["message"][:120],
                "rss_before_mib": round(before, 1), "rss_peak_mib": watch.stop(),
                "prompt_characters_fed": server.metric("textgen_prompt_characters_fed_total")}
    finally:
        server.stop()


def _trickle(port: int, limit: float, out: list) -> None:
    """Send a request's headers a byte a second; note when the server drops the connection."""
    headers = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(1.0)
    started, answer = time.monotonic(), b""
    try:
        for byte in headers:
            if time.monotonic() - started > limit:
                break
            sock.send(bytes([byte]))
            try:
                chunk = sock.recv(4096)
                answer += chunk
                if not chunk:
                    break  # closed by the server
            except TimeoutError:
                continue  # a second passed with no word from the server: the next byte
    except OSError:
        pass  # reset by the server
    finally:
        sock.close()
    out.append((round(time.monotonic() - started, 1), answer.split(b"\r\n", 1)[0].decode("latin-1")))


def slow_headers(checkpoints: Path, run: str | None, clients: int, limit: float = 60.0) -> dict:
    server = ServerProcess(checkpoints, run, ["--quiet"])
    try:
        results: list = []
        threads = [threading.Thread(target=_trickle, args=(server.port, limit, results)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        meanwhile = httpx.get(server.url + "/health", timeout=10).status_code
        for thread in threads:
            thread.join()
        return {"clients": clients, "dropped_after_s": sorted(s for s, _ in results),
                "answers": sorted({a for _, a in results}), "max_s": max(s for s, _ in results),
                "health_meanwhile": meanwhile}
    finally:
        server.stop()


# ----------------------------------------------------------------------------- options, run, summary


def add_options(parser) -> None:
    parser.add_argument("--checkpoints", type=Path, help="the attacks' run directory root (default: the tiny run)")
    parser.add_argument("--run", help="the run the attacks serve (with --checkpoints)")
    parser.add_argument("--attacks", default="slow-readers,prompt-flood,slow-headers")
    parser.add_argument("--slow-readers", type=int, default=100, help="clients that never read")
    parser.add_argument("--reader-n", type=int, default=16)
    parser.add_argument("--reader-tokens", type=int, default=4096)
    parser.add_argument("--reader-logprobs", type=int, default=5)
    parser.add_argument("--flood-prompts", type=int, default=8)
    parser.add_argument("--flood-n", type=int, default=16)
    parser.add_argument("--max-prompt", type=int, default=10_000, help="the server's prompt limit (the flood's length)")
    parser.add_argument("--slow-headers", type=int, default=5, help="clients sending headers a byte a second")


def quick(args) -> None:
    args.slow_readers, args.reader_n, args.reader_tokens = 10, 4, 1024
    args.flood_prompts, args.flood_n, args.max_prompt = 2, 4, 2000
    args.slow_headers = 2


def run(args, checkpoints: Path, model: str | None) -> tuple[dict, bool]:
    """The chosen attacks; prints each one's figures and a summary line with PASS/FAIL against the targets."""
    chosen = set(args.attacks.split(","))
    results, verdicts = {}, []
    if "slow-readers" in chosen:
        print(f"slow readers: {args.slow_readers} clients x n={args.reader_n} ...", flush=True)
        r = results["slow_readers"] = slow_readers(checkpoints, model, args.slow_readers, args.reader_n,
                                                   args.reader_tokens, args.reader_logprobs)
        print(json.dumps(r), flush=True)
        steady = r["normal_once_stalled"]
        ok = r["rss_growth_mib"] < 200 and steady["ttfc_s"] is not None and steady["ttfc_s"] < 1 and steady["complete"]
        verdicts.append((f"slow readers: {r['clients']} x n={r['n']}, max_tokens {r['max_tokens']}, logprobs "
                         f"{r['logprobs']}: RSS {r['rss_before_mib']} -> peak {r['rss_peak_mib']} MiB "
                         f"(+{r['rss_growth_mib']}); a normal client once they stalled: first character "
                         f"{steady['ttfc_s']} s, whole answer {steady['whole_s']} s; sent with them: "
                         f"{r['normal_sent_with_them']['ttfc_s']} s", ok))
    if "prompt-flood" in chosen:
        print(f"prompt flood: {args.flood_prompts} x {args.max_prompt} characters, n={args.flood_n} ...", flush=True)
        r = results["prompt_flood"] = prompt_flood(checkpoints, model, args.flood_prompts, args.flood_n, 5,
                                                   args.max_prompt)
        print(json.dumps(r), flush=True)
        ok = r["one_character_ttfc_s"] is not None and r["one_character_ttfc_s"] < 0.5 and \
            r["over_limit_status"] == 400 and all(a["status"] == 200 for a in r["flood_answers"])
        verdicts.append((f"prompt flood: {r['prompts']} x {r['prompt_characters']} characters, n={r['n']}, echo, "
                         f"logprobs 5: a one-character request's first character in {r['one_character_ttfc_s']} s; "
                         f"over the limit: {r['over_limit_status']}; RSS {r['rss_before_mib']} -> peak "
                         f"{r['rss_peak_mib']} MiB", ok))
    if "slow-headers" in chosen:
        print(f"slow headers: {args.slow_headers} clients ...", flush=True)
        r = results["slow_headers"] = slow_headers(checkpoints, model, args.slow_headers)
        print(json.dumps(r), flush=True)
        ok = r["max_s"] <= 12 and r["health_meanwhile"] == 200
        verdicts.append((f"slow headers: {r['clients']} clients dropped after {r['dropped_after_s']} s "
                         f"(answers {r['answers']})", ok))
    print()
    for line, ok in verdicts:
        print(f"{line}  [{'PASS' if ok else 'FAIL'}]")
    return results, all(ok for _, ok in verdicts)
