"""`zsclip serve` against the serving framework a user would pick instead: LitServe over zsclip's own model.

    pip install litserve                      # or: pip install -e ".[bench]"; nothing is installed at run time
    python benchmarks/serve_vs_peer.py                              # all three jobs, 3 rounds each
    python benchmarks/serve_vs_peer.py --jobs fixed --rounds 5

The job: one PNG per request (the repository's example images), top-3 of 48 classes, answered as
JSON. Jobs: ``fixed`` (the demo model, a classifier file loaded at start), ``labels`` (the demo
model, the 48 labels sent with every request: each server builds the classifier on first use and
caches it), ``vit`` (ViT-B-32 with seeded random weights saved once, a classifier file). The peer
(benchmarks/litserve_peer.py) is a plain LitAPI over the same encoder and classifier: LitServe's
HTTP process hands requests to an inference process that decodes and runs batches (max batch 32,
10 ms window). Both forward passes get the same threads (all cores but one).

Each round starts zsclip, then the peer (A B A B ...; --unbatched-peer adds LitServe without
batching), each on 127.0.0.1, with the same client (benchmarks/serving.py): first every image once
(the answers, compared: the same labels and scores within 1e-5 on every image), then one client
(p50 latency), then 16 clients (requests/s, p95, and the CPU time all the server's processes used
per request: on a shared machine the least disturbed figure); memory is the PSS of all the server's
processes after the load. Printed: medians with ranges, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from serving import (
    EXAMPLES,
    Load,
    cpu_seconds,
    example_images,
    free_port,
    load,
    load_average,
    post_answers,
    pss_bytes,
    start_server,
    stop_server,
)

PEER = Path(__file__).with_name("litserve_peer.py")
TEMPLATES = "photo"
TOP_K = "3"
JOBS = ("fixed", "labels", "vit")


@dataclass
class Job:
    """What both servers serve: a model, and a classifier file or labels sent per request."""

    name: str
    model: str
    classifier: str | None  # a classifier file; None: labels with every request
    labels: str
    requests_16: int  # per client, at 16 clients
    requests_1: int


@dataclass
class Figures:
    rates: list[float] = field(default_factory=list)
    p50_single: list[float] = field(default_factory=list)
    p95_loaded: list[float] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # the server's CPU time per request at 16 clients

    def add(self, single: Load, loaded: Load, pss: int, cpu_ms: float) -> None:
        self.cpu_ms.append(cpu_ms)
        self.rates.append(loaded.rate)
        self.p50_single.append(single.percentile_ms(50))
        self.p95_loaded.append(loaded.percentile_ms(95))
        self.pss.append(pss / 1e9)


def prepare(names: list[str], folder: Path, quick: bool) -> list[Job]:
    """Classifier files and the ViT-B-32 weights, made once (in this process) for both servers."""
    import zsclip

    labels = [line.strip() for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line.strip()]
    jobs = []
    for name in names:
        model = "demo"
        if name == "vit":
            import open_clip

            from zsclip.testing.tiny_open_clip import save_local_dir

            model = save_local_dir(folder / "vit-b-32", open_clip.get_model_config("ViT-B-32"), seed=0)
        classifier = None
        if name != "labels":
            encoder = zsclip.load_model(model, device="cpu")
            classifier = str(folder / f"{name}.zsc")
            zsclip.ZeroShotClassifier.build(encoder, labels, TEMPLATES, precision="fp32", cache=False).save(classifier)
        heavy = name == "vit"
        jobs.append(Job(name, model, classifier, ",".join(labels),
                        requests_16=(2 if quick else 4) if heavy else (10 if quick else 40),
                        requests_1=(5 if quick else 10) if heavy else (20 if quick else 60)))
    return jobs


def zsclip_server(job: Job, port: int, threads: int) -> tuple[list[str], str, str, dict]:
    args = [sys.executable, "-m", "zsclip", "serve", "--model", job.model, "--port", str(port), "--templates",
            TEMPLATES, "--log-level", "warning", "--queue-limit", "4096", "--threads", str(threads)]
    fields = {"top_k": TOP_K}
    if job.classifier:
        args += ["--classifier", job.classifier]
        fields["classifier"] = Path(job.classifier).stem
    else:
        fields["labels"] = job.labels
    base = f"http://127.0.0.1:{port}"
    return args, f"{base}/readyz", f"{base}/v1/classify", fields


def peer_server(job: Job, port: int, threads: int, batch: int = 32) -> tuple[list[str], str, str, dict]:
    args = [sys.executable, str(PEER), "--model", job.model, "--port", str(port), "--templates", TEMPLATES,
            "--threads", str(threads), "--max-batch-size", str(batch), "--batch-timeout", "0.01"]
    fields = {"top_k": TOP_K}
    if job.classifier:
        args += ["--classifier", job.classifier]
    else:
        fields["labels"] = job.labels
    base = f"http://127.0.0.1:{port}"
    return args, f"{base}/health", f"{base}/predict", fields


def predictions(answer: dict) -> list[tuple[str, float]]:
    return [(p["label"], p["score"]) for p in answer["results"][0]["predictions"]]


def run_one(server, job: Job, threads: int, clients: int, images) -> tuple[Load, Load, int, float, list]:
    args, ready, url, fields = server(job, free_port(), threads)
    process = start_server(args, ready, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def request(name: str, data: bytes) -> tuple[list, dict]:
            return [("images", (name, data, "image/png"))], fields

        answers = [predictions(a) for a in post_answers(url, images, request)]
        single = load(url, images, request, 1, job.requests_1)
        used = cpu_seconds(process)
        loaded = load(url, images, request, clients, job.requests_16)
        cpu_ms = (cpu_seconds(process) - used) / len(loaded.latencies) * 1000
        return single, loaded, pss_bytes(process), cpu_ms, answers
    finally:
        stop_server(process)


def compare(ours: list, theirs: list) -> float:
    """The largest score difference; labels must be equal, in order, on every image."""
    worst = 0.0
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if [label for label, _ in a] != [label for label, _ in b]:
            raise SystemExit(f"answers differ on image {index}: zsclip {a} vs peer {b}")
        worst = max(worst, *(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)))
    if worst > 1e-5:
        raise SystemExit(f"scores differ by {worst:.2e} (over 1e-5)")
    return worst


def span(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def unbatched_peer_server(job: Job, port: int, threads: int) -> tuple[list[str], str, str, dict]:
    return peer_server(job, port, threads, batch=1)


SERVERS = {"zsclip": ("zsclip serve", zsclip_server), "peer": ("LitServe (batch 32/10ms)", peer_server),
           "peer-1": ("LitServe (no batching)", unbatched_peer_server)}


def report(job: Job, figures: dict[str, Figures], clients: int, worst: float) -> None:
    ours, theirs = figures["zsclip"], figures["peer"]
    print(f"\n== job {job.name}: model {job.name if job.name == 'vit' else 'demo'}, "
          f"{'classifier file' if job.classifier else 'labels per request'}; answers equal on every image "
          f"(largest score difference {worst:.1e})")
    loaded = f"p95 @{clients} (ms)"
    print(f"{'server':<26} {'requests/s @' + str(clients):>24} {'p50 @1 (ms)':>18} {loaded:>20} "
          f"{'CPU ms/request':>18} {'PSS (GB)':>16}")
    for key, f in figures.items():
        name = SERVERS[key][0]
        print(f"{name:<26} {span(f.rates):>24} {span(f.p50_single):>18} {span(f.p95_loaded, 0):>20} "
              f"{span(f.cpu_ms):>18} {span(f.pss, 2):>16}")
    best_p50 = min(statistics.median(f.p50_single) for key, f in figures.items() if key != "zsclip")
    rate = statistics.median(ours.rates) / statistics.median(theirs.rates)
    print(f"ratio zsclip/peer (batch 32): requests/s {rate:.2f}x, p50 @1 "
          f"{statistics.median(ours.p50_single) / statistics.median(theirs.p50_single):.2f}x (vs the peer's best p50: "
          f"{statistics.median(ours.p50_single) / best_p50:.2f}x), "
          f"server CPU per request {statistics.median(ours.cpu_ms) / statistics.median(theirs.cpu_ms):.2f}x, "
          f"memory {statistics.median(ours.pss) / statistics.median(theirs.pss):.2f}x  (load average {load_average()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated: {', '.join(JOBS)}")
    parser.add_argument("--rounds", type=int, default=3, help="each round runs zsclip, then the peer")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                        help="forward threads of both servers (default: all cores but one)")
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--unbatched-peer", action="store_true",
                        help="also run LitServe without batching (its best single-client latency)")
    args = parser.parse_args()
    names = [name.strip() for name in args.jobs.split(",") if name.strip()]
    unknown = sorted(set(names) - set(JOBS))
    if unknown or not names or args.rounds < 1 or args.clients < 1:
        raise SystemExit(f"--jobs takes {', '.join(JOBS)} (got {', '.join(unknown) or 'none'}); "
                         "--rounds and --clients at least 1")
    try:
        import litserve  # noqa: F401
    except ImportError:
        raise SystemExit('the peer needs LitServe: pip install litserve (or pip install -e ".[bench]")') from None
    servers = ["zsclip", "peer"] + (["peer-1"] if args.unbatched_peer else [])
    images = example_images()
    print(f"{len(images)} PNGs, top-{TOP_K} of 48 classes, {args.clients} clients, {args.rounds} rounds, "
          f"{os.cpu_count()} cores, {args.threads} forward thread(s), load average {load_average()}")
    with tempfile.TemporaryDirectory() as folder:
        for job in prepare(names, Path(folder), args.quick):
            figures = {key: Figures() for key in servers}
            worst = 0.0
            for round_number in range(args.rounds):
                answers = {}
                for name in servers:
                    server = SERVERS[name][1]
                    single, loaded, pss, cpu_ms, answers[name] = run_one(server, job, args.threads, args.clients,
                                                                         images)
                    figures[name].add(single, loaded, pss, cpu_ms)
                    print(f"  {job.name} round {round_number + 1} {name:<6} {loaded.rate:7.1f} requests/s  "
                          f"p50@1 {single.percentile_ms(50):6.1f} ms  p95@{args.clients} "
                          f"{loaded.percentile_ms(95):6.0f} ms  CPU {cpu_ms:5.1f} ms/request  PSS {pss / 1e9:.2f} GB  "
                          f"(load {load_average()})",
                          flush=True)
                worst = max(worst, *(compare(answers["zsclip"], answers[key]) for key in servers if key != "zsclip"))
            report(job, figures, args.clients, worst)


if __name__ == "__main__":
    main()
