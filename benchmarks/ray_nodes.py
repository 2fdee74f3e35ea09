"""`embed --ray` on a real multi-node Ray cluster on this machine: per-node throughput on 1, 2 and 3
worker nodes, the cost of a node lost mid-job, and a killed driver resumed.

    python benchmarks/ray_nodes.py                                  # demo model, 2,000 images
    python benchmarks/ray_nodes.py --model ViT-B-32 --images 192    # seeded random weights

Each worker node is its own raylet with 1 CPU, its processes pinned to a core of its own (node i on
core i mod the cores here), under a head that only coordinates (no CPUs; the driver's node). On a
2-core machine nodes 1 and 2 have a core each and node 3 shares node 1's core: 3 nodes show the
placement and the overhead, not more throughput. Every run writes a fresh store. On each cluster
the first job starts the encoding actors (cold) and a second job takes them warm (the driver keeps
its pool between jobs); a lost node is removed once a third of the images of a warm job are done,
and compared with the warm uninterrupted job; a killed driver is SIGKILLed (the `zsclip embed` CLI
in a subprocess, which starts its own actors) after half of the commits and the same command run again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import ray
from ray_scale import prepared

import zsclip
from zsclip.cluster import RaySettings, connect
from zsclip.cluster.nodes import ray_nodes
from zsclip.cluster.tasks import embed_on_ray
from zsclip.store import EmbeddingStore
from zsclip.store.format import MANIFEST


def job(encoder, sources, options, folder: Path, name: str, on_progress=None) -> tuple[float, float, Counter]:
    """(seconds, images/s over the second half of the images, images per node) of one `embed --ray`
    into a fresh store: the second half's rate leaves out the job's start-up (actors' processes, models)."""
    nodes: Counter = Counter()
    marks: list[tuple[float, int]] = []

    def progress(images: int) -> None:
        marks.append((time.perf_counter(), (marks[-1][1] if marks else 0) + images))
        if on_progress is not None:
            on_progress(images)

    store = EmbeddingStore.create_or_open(folder / f"{name}.zse", encoder, precision="fp32")
    start = time.perf_counter()
    report = embed_on_ray(store, sources, encoder, options, RaySettings(), nodes=nodes, on_progress=progress)
    seconds = time.perf_counter() - start
    assert report.encoded == len(sources), report
    half = next(mark for mark in marks if mark[1] >= len(sources) / 2)
    return seconds, (marks[-1][1] - half[1]) / max(1e-9, marks[-1][0] - half[0]), nodes


def line(what: str, images: int, seconds: float, steady: float, nodes: Counter) -> str:
    shares = ", ".join(f"{count / images * steady:.1f}" for _, count in sorted(nodes.items()))
    return (f"{what:30s} {seconds:6.1f} s  job {images / seconds:7.1f} images/s, second half {steady:7.1f} "
            f"images/s; per node (its share of the images x the second half's rate): {shares}")


def lost_node(encoder, sources, options, cluster, folder: Path) -> tuple[float, float, Counter]:
    """One job on the cluster with a worker node removed once a third of the images are done."""
    done: list[int] = []
    victim = sorted(cluster.worker_nodes, key=lambda node: node.node_id)[0]

    def on_progress(images: int) -> None:
        done.append(images)
        if sum(done) >= len(sources) // 3 and victim in cluster.worker_nodes:
            cluster.remove_node(victim)

    return job(encoder, sources, options, folder, "lost", on_progress)


def killed_and_resumed(encoder, sources, options, cluster, folder: Path) -> str:
    """The CLI killed after half of its commits, then run again: both runs' time and the work kept."""
    store = folder / "killed.zse"
    commit = max(options.batch_size, len(sources) // 8)
    command = [sys.executable, "-m", "zsclip", "embed", str(sources[0].name.rsplit("/", 1)[0]), "-m", encoder.name,
               "--precision", "fp32", "-b", str(options.batch_size), "--commit-every", str(commit),
               "--ray", cluster.address, "-o", str(store)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    while process.poll() is None:
        manifest = store / MANIFEST
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 4:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    killed = time.perf_counter() - start
    kept = len(EmbeddingStore.open(store))
    start = time.perf_counter()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    again = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([*command[:-1], str(folder / "whole-cli.zse")], check=True, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL)
    whole = time.perf_counter() - start
    return (f"driver killed after {killed:.1f} s with {kept} of {len(sources)} images committed; the same command "
            f"again finished the rest in {again:.1f} s (one uninterrupted CLI run: {whole:.1f} s; each CLI run "
            "includes its own start-up and model load)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-resume", action="store_true", help="skip the killed-driver runs")
    args = parser.parse_args()
    options = zsclip.RunOptions(precision="fp32", batch_size=args.batch_size)
    print(f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}; {args.images} images, {args.model}, fp32, "
          f"batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as scratch:
        folder, weights = Path(scratch) / "images", Path(scratch) / "weights"
        folder.mkdir()
        weights.mkdir()
        encoder, sources = prepared(args.model, None, args.images, folder, weights)
        for count in (1, 2, 3):
            with ray_nodes(workers=count, pin=True) as cluster:
                connect(RaySettings(address=cluster.address))
                seconds, steady, nodes = job(encoder, sources, options, Path(scratch), f"nodes{count}")
                print(line(f"{count} worker node(s), first job", len(sources), seconds, steady, nodes), flush=True)
                seconds, steady, nodes = job(encoder, sources, options, Path(scratch), f"nodes{count}-warm")
                print(line(f"{count} worker node(s), warm actors", len(sources), seconds, steady, nodes), flush=True)
                if count == 2:
                    two = seconds
                    seconds, steady, nodes = lost_node(encoder, sources, options, cluster, Path(scratch))
                    print(line("2 nodes, one removed at 1/3", len(sources), seconds, steady, nodes), flush=True)
                    print(f"cost of the lost node: {seconds - two:+.1f} s against the uninterrupted warm 2-node job "
                          f"({(seconds / two - 1) * 100:+.0f}%)", flush=True)
                    if not args.no_resume:
                        cluster.add_node(num_cpus=1)
                        print(killed_and_resumed(encoder, sources, options, cluster, Path(scratch)), flush=True)
                ray.shutdown()
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
