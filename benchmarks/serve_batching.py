"""Dynamic batching in `zsclip serve`: throughput of concurrent clients with batching on vs off.

    python benchmarks/serve_batching.py                         # demo model, 16 clients x 8 requests
    python benchmarks/serve_batching.py --model ViT-B-32 --pretrained random --clients 32

Starts two real servers on 127.0.0.1 in the same run (--max-batch-size 32, then 1 = one forward
pass per image, what a naive per-request server does), sends the same requests (one image each)
from concurrent clients, and prints requests/s, latency percentiles and the ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def start(model: str, pretrained: str | None, batch: int, device: str, precision: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "zsclip", "serve", "--model", model, "--port", str(port), "--templates", "photo",
            "--max-batch-size", str(batch), "--max-wait-ms", "5", "--log-level", "warning", "--device", device,
            "--queue-limit", "4096", "--precision", precision]
    if pretrained:
        args += ["--pretrained", pretrained]
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("server did not start")


def load(url: str, images: list[tuple[str, bytes]], labels: str, clients: int, per_client: int):
    def client(index: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=60) as session:
            for request in range(per_client):
                name, data = images[(index + request) % len(images)]
                started = time.perf_counter()
                response = session.post(f"{url}/v1/classify", files=[("images", (name, data, "image/png"))],
                                        data={"labels": labels})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    with httpx.Client(timeout=60) as session:  # build the classifier before timing
        session.post(f"{url}/v1/classify", files=[("images", images[0])], data={"labels": labels}).raise_for_status()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for result in pool.map(client, range(clients)) for x in result]
    seconds = time.perf_counter() - started
    return len(latencies) / seconds, np.percentile(latencies, [50, 95]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=8, help="per client")
    args = parser.parse_args()
    images = [(p.name, p.read_bytes()) for p in sorted(EXAMPLES.glob("*.png"))]
    labels = ",".join(p.stem.replace("_", " ") for p in sorted(EXAMPLES.glob("*.png")))
    print(f"{args.model} on {args.device} ({args.precision}), {args.clients} concurrent clients x {args.requests} "
          f"requests of one image, {os.cpu_count()} cores")
    rates = {}
    for batch in (32, 1):
        process, url = start(args.model, args.pretrained, batch, args.device, args.precision)
        try:
            rate, (p50, p95) = load(url, images, labels, args.clients, args.requests)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        rates[batch] = rate
        name = "batching on  (max batch 32)" if batch > 1 else "batching off (max batch 1) "
        print(f"{name}  {rate:7.1f} requests/s   latency p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")
    print(f"ratio {rates[32] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
