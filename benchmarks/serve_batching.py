"""Dynamic batching in `zsclip serve`: throughput of concurrent clients with batching on vs off.

    python benchmarks/serve_batching.py                         # demo model, 16 clients x 8 requests
    python benchmarks/serve_batching.py --model ViT-B-32 --pretrained random --clients 32

Starts two real servers on 127.0.0.1 in the same run (--max-batch-size 32, then 1 = one forward
pass per image, what a naive per-request server does), sends the same requests (one image each)
from concurrent clients (the client of benchmarks/serving.py), and prints requests/s, latency
percentiles and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys

from serving import EXAMPLES, example_images, free_port, load, post_answers, start_server, stop_server


def start(model: str, pretrained: str | None, batch: int, device: str, precision: str):
    port = free_port()
    args = [sys.executable, "-m", "zsclip", "serve", "--model", model, "--port", str(port), "--templates", "photo",
            "--max-batch-size", str(batch), "--max-wait-ms", "5", "--log-level", "warning", "--device", device,
            "--queue-limit", "4096", "--precision", precision]
    if pretrained:
        args += ["--pretrained", pretrained]
    url = f"http://127.0.0.1:{port}"
    return start_server(args, f"{url}/readyz"), url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=8, help="per client")
    args = parser.parse_args()
    images = example_images()
    labels = ",".join(p.stem.replace("_", " ") for p in sorted(EXAMPLES.glob("*.png")))
    print(f"{args.model} on {args.device} ({args.precision}), {args.clients} concurrent clients x {args.requests} "
          f"requests of one image, {os.cpu_count()} cores")

    def request(name: str, data: bytes) -> tuple[list, dict]:
        return [("images", (name, data, "image/png"))], {"labels": labels}

    rates = {}
    for batch in (32, 1):
        process, url = start(args.model, args.pretrained, batch, args.device, args.precision)
        try:
            post_answers(f"{url}/v1/classify", images[:1], request)  # build the classifier before timing
            result = load(f"{url}/v1/classify", images, request, args.clients, args.requests)
        finally:
            stop_server(process)
        rates[batch] = result.rate
        name = "batching on  (max batch 32)" if batch > 1 else "batching off (max batch 1) "
        print(f"{name}  {result.rate:7.1f} requests/s   latency p50 {result.percentile_ms(50):6.1f} ms  "
              f"p95 {result.percentile_ms(95):6.1f} ms")
    print(f"ratio {rates[32] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
