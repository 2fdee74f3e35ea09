"""Time to first answer: what a user waits for, end to end, against a bare ``python -c pass`` in the same run.

    python benchmarks/startup.py                  # ~3 min on 2 CPU cores; --runs 5 by default

Every case is a fresh process (as a user starts it), timed from spawn to exit (or, for ``serve``, until
``/readyz`` answers 200), repeated ``--runs`` times; the table shows medians, the difference to bare Python
and the ratio, and the CPU seconds each case used (what a shared machine's other jobs barely move). Cases:

- ``zsclip --help``;
- classify the 10 images of ``examples/`` with the demo model (classifier already cached);
- re-classify a 1,000-image embedding store (demo-world images, embedded once here with the demo model)
  with labels whose classifier is cached (no model loads) and with new labels (a new label per run: the
  model loads for its text tower);
- ``zsclip serve --model demo`` until ``/readyz`` answers (127.0.0.1, a free port, at most 120 s);
- what is decided before any model loads (issue 38): ``search`` of a missing store, ``serve --store`` of
  a missing store (both with the default model, never loaded), ``embed`` again with nothing new, and
  ``zsclip models`` (its first run asks open_clip for its registry; later ones read what it remembered).
  ``--checks`` times only these (with a 10-image store); ``--src`` times another checkout's code.

Then "where the time goes": the same pieces timed inside one process (imports, loading the demo weights,
building the classifier, the first batch of 10 images).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LABELS = "red circle,blue square,green star,yellow ring,purple cross,orange triangle,white ring,black star"


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far: unlike wall time, barely
    moved by other jobs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], env: dict, status: int = 0) -> float:
    """Seconds from spawn to exit of one fresh process, which must end with ``status``."""
    start = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != status:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_ready(env: dict, limit: float = 120.0) -> float:
    port = free_port()
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "zsclip", "serve", "--model", "demo", "--port", str(port),
                               "--host", "127.0.0.1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.perf_counter() - start < limit:
            if server.poll() is not None:
                raise SystemExit(f"zsclip serve exited ({server.returncode}): {server.stderr.read().decode()[-500:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"zsclip serve was not ready within {limit:.0f} s")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def make_store(folder: Path, env: dict, count: int) -> Path:
    from zsclip import shapes

    images = folder / "images"
    images.mkdir()
    for index, spec in enumerate(shapes.sample_specs(count, seed=0, split="all")):
        shapes.render(spec).save(images / f"{index:05d}.png")
    store = folder / "shapes.zse"
    timed([sys.executable, "-m", "zsclip", "embed", str(images), "--model", "demo", "-o", str(store)], env)
    return store


def where_the_time_goes(env: dict) -> list[tuple[str, float]]:
    """The pieces of a demo classify, timed in one fresh process, in the order they happen."""
    script = f"""
import time, json
t = [time.perf_counter()]
def mark(): t.append(time.perf_counter())
import zsclip.cli; mark()
import torch; mark()
import open_clip; mark()
import pyarrow, pyarrow.parquet; mark()
enc = zsclip.load_model("demo", device="cpu"); mark()
clf = zsclip.ZeroShotClassifier.build(enc, {LABELS.split(",")!r}, cache=False); mark()
images = sorted(str(p) for p in __import__("pathlib").Path({str(EXAMPLES)!r}).glob("*.png"))
clf.predict(images, top_k=3); mark()
clf.predict(images, top_k=3); mark()
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    import json

    names = ["import zsclip.cli (what --help needs)", "import torch", "import open_clip (after torch)",
             "import pyarrow (stores, Parquet)", "load the demo weights (18.5 MB)",
             "build a classifier: 8 labels x 80 templates", "first batch: 10 images (workers start)",
             "second batch: 10 images"]
    return list(zip(names, json.loads(done.stdout.strip().splitlines()[-1]), strict=True))


def cached_store_pieces(env: dict, store: Path, out: Path) -> list[tuple[str, float]]:
    """The pieces of ``classify STORE`` with cached labels, timed in one fresh process, in order."""
    script = f"""
import time, json, sys
t = [time.perf_counter()]
def mark(): t.append(time.perf_counter())
from zsclip.cli import main; mark()
import numpy, pyarrow, pyarrow.parquet; mark()
try:
    main(["classify", {str(store)!r}, "--labels", {LABELS!r}, "-o", {str(out)!r}], prog_name="zsclip")
except SystemExit:
    pass
mark()
print(json.dumps([[b - a for a, b in zip(t, t[1:])], "torch" in sys.modules]))
"""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    import json

    seconds, torch_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    names = ["import zsclip.cli", "import numpy, pyarrow (Parquet)",
             f"classify: read the store, the cached classifier, answer, write CSV (torch imported: {torch_loaded})"]
    return list(zip(names, seconds, strict=True))


def before_the_model(work: Path, env: dict, zsclip: list[str], store: Path | None = None) -> dict:
    """The cases answered before any model loads (each a fresh process; see the module docstring)."""
    if store is None:
        store = work / "ten.zse"
        timed([*zsclip, "embed", str(EXAMPLES), "--model", "demo", "-o", str(store)], env)
    images = str(store.parent / "images") if (store.parent / "images").is_dir() else str(EXAMPLES)
    remembered = Path(env["ZSCLIP_CACHE_DIR"]) / "open_clip-pretrained.json"

    def models_first() -> float:
        remembered.unlink(missing_ok=True)
        return timed([*zsclip, "models"], env)

    return {
        "python -c pass (bare)": lambda: timed([sys.executable, "-c", "pass"], env),
        "search missing.zse: no such store": lambda: timed([*zsclip, "search", str(work / "missing.zse"), "a cat"],
                                                           env, status=1),
        "serve --store missing.zse": lambda: timed([*zsclip, "serve", "--store", str(work / "missing.zse"), "--port",
                                                    "0"], env, status=2),
        "embed again, nothing new": lambda: timed([*zsclip, "embed", images, "-o", str(store)], env),
        "zsclip models (first run)": models_first,
        "zsclip models (registry remembered)": lambda: timed([*zsclip, "models"], env),
    }


def report(cases: dict, runs: int) -> None:
    """Run every case ``runs`` times, interleaved, and print the table of medians."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so a busy moment on the machine touches every case alike
        for name, case in cases.items():
            before = children_cpu()
            results[name].append(case())
            cpu[name].append(children_cpu() - before)
    bare = statistics.median(results["python -c pass (bare)"])
    print(f"\nTime to first answer (median of {runs} runs, fresh process each; bare python {bare:.3f} s)\n")
    bare_cpu = statistics.median(cpu["python -c pass (bare)"])
    print(f"| {'case':42s} | median s | minus bare s | x bare | CPU s | CPU minus bare s |")
    print(f"|{'-' * 44}|---------:|-------------:|-------:|------:|-----------------:|")
    for name, values in results.items():
        median = statistics.median(values)
        used = statistics.median(cpu[name])
        print(f"| {name:42s} | {median:8.3f} | {median - bare:12.3f} | {median / bare:6.1f} | {used:5.2f} | "
              f"{used - bare_cpu:16.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case (medians are shown)")
    parser.add_argument("--images", type=int, default=1000, help="images in the store")
    parser.add_argument("--checks", action="store_true",
                        help="only the cases decided before a model loads (quick; a 10-image store)")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the zsclip source folder to time (default: this one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zsclip-startup-"))
    env = {**os.environ, "ZSCLIP_CACHE_DIR": str(work / "cache"), "PYTHONPATH": args.src + os.pathsep +
           os.environ.get("PYTHONPATH", ""), "ZSCLIP_QUIET": "1"}
    zsclip = [sys.executable, "-m", "zsclip"]
    if args.checks:
        report(before_the_model(work, env, zsclip), args.runs)
        return
    print(f"building a {args.images}-image store with the demo model in {work} ...", file=sys.stderr)
    store = make_store(work, env, args.images)
    classify10 = [*zsclip, "classify", str(EXAMPLES), "--labels-file", str(EXAMPLES / "labels.txt"), "--model",
                  "demo", "-o", str(work / "ten.csv")]
    cached = [*zsclip, "classify", str(store), "--labels", LABELS, "-o", str(work / "cached.csv")]
    timed(classify10, env)  # fill the classifier cache: these cases measure cached labels
    timed(cached, env)
    counter = iter(range(10_000))
    cases = {
        "python -c pass (bare)": lambda: timed([sys.executable, "-c", "pass"], env),
        "zsclip --help": lambda: timed([*zsclip, "--help"], env),
        "classify 10 images, demo model": lambda: timed(classify10, env),
        f"store of {args.images}: cached labels": lambda: timed(cached, env),
        f"store of {args.images}: new labels": lambda: timed(
            [*zsclip, "classify", str(store), "--labels", f"{LABELS},grey thing {next(counter)}", "-o",
             str(work / "new.csv")], env),
        "serve --model demo until /readyz": lambda: serve_ready(env),
    }
    cases.update(before_the_model(work, env, zsclip, store))
    report(cases, args.runs)
    print("\nWhere the time goes (one fresh process, in order):\n")
    for name, seconds in where_the_time_goes(env):
        print(f"  {name:45s} {seconds:7.3f} s")
    print(f"\nThe {args.images}-image store with cached labels (one fresh process, in order):\n")
    for name, seconds in cached_store_pieces(env, store, work / "pieces.csv"):
        print(f"  {name:45s} {seconds:7.3f} s")


if __name__ == "__main__":
    main()
