"""zsclip on Ray Data (issue 13), on a real local Ray instance (one per module, 2 CPUs): the same
embeddings, predictions and metrics as the local pipeline, error rows for bad images, a dead actor
replaced and its batch retried, and a killed driver's `zsclip embed --ray` resumed."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # every test here starts a local Ray instance

import zsclip  # noqa: E402
from zsclip import shapes  # noqa: E402
from zsclip.cli import main  # noqa: E402
from zsclip.cluster import RaySettings, connect  # noqa: E402
from zsclip.cluster.pipeline import EncodeActor, ray_feature_batches  # noqa: E402
from zsclip.cluster.tasks import embed_on_ray  # noqa: E402
from zsclip.data.sources import expand_inputs  # noqa: E402
from zsclip.errors import InputError  # noqa: E402
from zsclip.pipeline import feature_batches  # noqa: E402
from zsclip.store import EmbeddingStore, embed  # noqa: E402
from zsclip.store.format import MANIFEST  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    from zsclip.cluster.actors import release_pool

    connect(RaySettings(num_cpus=2))
    yield
    release_pool()  # the warm pool's actors ended before Ray is
    ray.shutdown()


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray_tree")
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "star")):
        folder = root / f"{colour}_{shape}"
        folder.mkdir()
        for index, spec in enumerate(shapes.sample_specs(5, seed=len(colour) + 10 * len(shape))):
            spec = shapes.ShapeSpec(colour, shape, spec.background, spec.radius, spec.centre, spec.rotation)
            shapes.render(spec).save(folder / f"{index}.png")
    (root / "blue_square" / "broken.png").write_bytes(b"not an image")
    return root


OPTIONS = zsclip.RunOptions(precision="fp32", batch_size=4, workers=0)


def test_ray_gives_the_local_embeddings_and_error_rows(demo, tree):
    sources = list(expand_inputs([str(tree)]))
    local = list(feature_batches(sources, demo, OPTIONS))
    remote = list(ray_feature_batches(sources, demo, OPTIONS, RaySettings()))
    assert sum((n for n, _, _ in remote), []) == sum((n for n, _, _ in local), [])
    assert sum((e for _, e, _ in remote), []) == sum((e for _, e, _ in local), [])
    difference = (torch.cat([f for *_, f in remote]) - torch.cat([f for *_, f in local])).abs().max()
    assert float(difference) < 1e-6


def test_eval_on_ray_equals_the_local_eval(demo, tree):
    collection = zsclip.open_collection(tree)[0]
    local = zsclip.evaluate(collection, demo, ["photo", "openai-imagenet-7"], options=OPTIONS)
    remote = zsclip.evaluate(collection, demo, ["photo", "openai-imagenet-7"], options=OPTIONS, ray=RaySettings())
    assert remote.metrics == local.metrics  # the same features, the same counts: exactly equal
    assert remote.failures == local.failures and remote.num_images == 15


def test_classify_and_embed_with_the_ray_option(demo, tree, tmp_path):
    common = ["--model", "demo", "--precision", "fp32", "-b", "4", "-j", "0"]
    labels = ["--labels", "red circle,blue square,green star", "-t", "photo"]
    local = CliRunner().invoke(main, ["classify", str(tree), *labels, *common, "-o", str(tmp_path / "l.jsonl")])
    remote = CliRunner().invoke(main, ["classify", str(tree), *labels, *common, "--ray", "auto",
                                       "-o", str(tmp_path / "r.jsonl")])
    assert local.exit_code == remote.exit_code == 1, remote.output  # the broken file, reported by both
    lines = [[json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
             for name in ("l.jsonl", "r.jsonl")]
    assert [(r["path"], r["predictions"][:1], r["error"]) for r in lines[0]] == \
           [(r["path"], r["predictions"][:1], r["error"]) for r in lines[1]]
    result = CliRunner().invoke(main, ["embed", str(tree), *common, "--ray", "auto", "-o", str(tmp_path / "s.zse")])
    assert result.exit_code == 1 and "15 encoded" in result.stderr
    # a local run continues the Ray run's store: nothing to encode again
    again = CliRunner().invoke(main, ["embed", str(tree), *common, "-o", str(tmp_path / "s.zse")])
    assert "0 encoded, 16 unchanged" in again.stderr


def test_ray_jobs_show_the_local_progress_bar_on_a_terminal(demo, tree, tmp_path, monkeypatch):
    """On a terminal, `embed --ray` and `classify --ray` show the bar a local run shows: images done of
    the total, and the rate."""
    import click.testing

    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True, raising=False)
    common = ["--model", "demo", "--precision", "fp32", "-b", "4", "-j", "0", "--ray", "auto"]
    runs = {"embedding": ["embed", str(tree), *common, "-o", str(tmp_path / "bar.zse")],
            "classifying": ["classify", str(tree), "--labels", "red circle,blue square", *common,
                            "-o", str(tmp_path / "bar.csv")]}
    for what, command in runs.items():
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, result.output  # the broken file, reported
        # the rate: images per second, or seconds per image on a slow machine (tqdm flips the unit below 1/s)
        assert re.search(rf"{what}: 100%.*\b16/16 \[[^]]*(img/s|s/img)\]", result.stderr), result.stderr


def test_a_killed_ray_driver_resumes_to_the_same_store(demo, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index, spec in enumerate(shapes.sample_specs(96, seed=3)):
        shapes.render(spec).save(folder / f"{index:03d}.png")
    store_path = tmp_path / "killed.zse"
    command = [sys.executable, "-m", "zsclip", "embed", str(folder), "-m", "demo", "--precision", "fp32", "-b", "4",
               "--commit-every", "8", "--ray", "auto", "-o", str(store_path)]
    env = {**os.environ, "ZSCLIP_CACHE_DIR": str(tmp_path / "cache"), "RAY_ADDRESS": ""}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        manifest = store_path / MANIFEST
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the local Ray it started
    process.wait(timeout=30)
    committed = len(json.loads((store_path / MANIFEST).read_text())["shards"])
    assert 2 <= committed < 12
    store = EmbeddingStore.open(store_path)
    report = embed_on_ray(store, list(expand_inputs([str(folder)])), demo, OPTIONS, RaySettings(), commit_every=8)
    assert report.skipped == 8 * committed and report.encoded == 96 - 8 * committed
    whole = EmbeddingStore.create_or_open(tmp_path / "whole.zse", demo, precision="fp32")
    embed(whole, list(expand_inputs([str(folder)])), demo, OPTIONS)

    def view(s: EmbeddingStore) -> dict:
        return {p: e for b in s.batches() for p, e in zip(b.paths, b.embeddings, strict=True)}

    resumed, reference = view(EmbeddingStore.open(store_path)), view(whole)
    assert set(resumed) == set(reference)
    assert max(float(np.abs(resumed[p] - reference[p]).max()) for p in reference) < 1e-3  # float16 storage


def test_without_ray_the_option_is_one_line(monkeypatch):
    from zsclip.cluster import session

    monkeypatch.setattr(session, "ray_available", lambda: False)
    with pytest.raises(InputError, match=r'pip install "zsclip\[ray\]"'):
        session.connect(RaySettings())


def test_eval_on_ray_reads_webdataset_shards_and_reports_a_missing_one(demo, tree, tmp_path):
    import io
    import tarfile

    classnames = ["red circle", "blue square", "green star"]
    images = sorted(p for p in tree.rglob("*.png"))
    for shard in range(2):
        with tarfile.open(tmp_path / f"s-{shard}.tar", "w") as archive:
            for index, path in enumerate(images[shard::2]):
                archive.add(path, arcname=f"{shard}{index:03d}.png")
                label = str(classnames.index(path.parent.name.replace("_", " "))).encode()
                info = tarfile.TarInfo(f"{shard}{index:03d}.cls")
                info.size = len(label)
                archive.addfile(info, io.BytesIO(label))
    (tmp_path / "s-2.tar").write_bytes((tmp_path / "s-1.tar").read_bytes())
    collection = zsclip.data.shards.webdataset(f"{tmp_path}/s-{{0..2}}.tar", classnames)
    (tmp_path / "s-2.tar").unlink()  # a shard that vanishes after the job was planned (storage trouble)
    local = zsclip.evaluate(collection, demo, "photo", options=OPTIONS)
    remote = zsclip.evaluate(collection, demo, "photo", options=OPTIONS, ray=RaySettings())
    assert remote.metrics == local.metrics and remote.num_images == 15
    reasons = " ".join(f["error"] for f in remote.failures)
    assert "cannot read shard" in reasons and "s-2.tar" in " ".join(f["path"] for f in remote.failures)
    assert sorted(f["path"] for f in remote.failures) == sorted(f["path"] for f in local.failures)


def test_classify_a_store_on_ray_equals_the_local_store_classification(demo, tree, tmp_path):
    from zsclip.tasks.stored import classify_store

    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32", dtype="float32")
    embed(store, list(expand_inputs([str(tree)])), demo, OPTIONS, commit_every=6)
    (tree / "red_circle" / "0.png").touch()  # a newer row for one image: the view keeps only that one
    embed(store, list(expand_inputs([str(tree)])), demo, OPTIONS, commit_every=6)
    classifier = zsclip.ZeroShotClassifier.build(demo, ["red circle", "blue square", "green star"], "photo")
    local = list(classify_store(store, classifier, top_k=2))
    remote = list(zsclip.classify(tmp_path / "s.zse", classifier=classifier, top_k=2, ray=RaySettings()))
    assert [(p.source, p.labels, p.error) for p in remote] == [(p.source, p.labels, p.error) for p in local]
    assert len(remote) == 16
    for a, b in zip(local, remote, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_a_gpu_model_on_a_cluster_without_gpus_is_refused_in_one_line_not_left_waiting(demo):
    from types import SimpleNamespace

    from zsclip.cluster.pipeline import encoding_job

    on_cuda = SimpleNamespace(device=torch.device("cuda"), image_transform=demo.image_transform,
                              image_size=demo.image_size, name="demo", fingerprint=demo.fingerprint)
    started = time.monotonic()
    with pytest.raises(InputError, match="has no GPU"):
        encoding_job([], on_cuda, OPTIONS, RaySettings())
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_multilabel_classify_eval_and_retrieval_on_ray_equal_the_local_runs(tmp_path):
    """classify --multi-label, eval --multi-label (over images and over a multi-label store) and eval --task
    retrieval with --ray auto: the rows and metrics of the same commands run locally."""
    test = shapes.write_scenes(tmp_path / "test", 12, seed=21)
    calibration = shapes.write_scenes(tmp_path / "calibration", 12, seed=22)
    common = ["--model", "demo", "--precision", "fp32", "-b", "4", "-j", "0"]
    assert CliRunner().invoke(main, ["embed", str(test), "--labelled", "-o", str(tmp_path / "s.zse"), "--dtype",
                                     "float32", *common]).exit_code == 0
    labels = ",".join((test.parent / "labels.txt").read_text().split("\n")[:-1])
    commands = {
        "classify.jsonl": ["classify", str(test.parent / "images"), "--labels", labels, "--multi-label",
                           "--calibrate", str(calibration)],
        "eval.json": ["eval", "--data", str(test), "--multi-label", "--calibrate", str(calibration)],
        "store.json": ["eval", "--data", str(tmp_path / "s.zse"), "--multi-label", "--threshold", "0.4"],
        "retrieval.json": ["eval", "--task", "retrieval", "--data", str(test.parent / "captions.csv")],
    }
    for name, command in commands.items():
        outputs = []
        for extra in ([], ["--ray", "auto"]):
            out = tmp_path / f"{len(outputs)}-{name}"
            result = CliRunner().invoke(main, [*command, *common, *extra, "-o", str(out)])
            assert result.exit_code == 0, (name, extra, result.output)
            outputs.append(out)
        if name.endswith(".jsonl"):
            local, remote = ([json.loads(line) for line in out.read_text().splitlines()] for out in outputs)
            assert [(r["path"], r["labels"]) for r in remote] == [(r["path"], r["labels"]) for r in local]
            for a, b in zip(local, remote, strict=True):
                assert b["scores"] == pytest.approx(a["scores"], abs=1e-5)
            continue
        local, remote = (json.loads(out.read_text()) for out in outputs)
        assert remote["metrics"] == pytest.approx(local["metrics"], abs=1e-6), name
        assert remote["num_images"] == local["num_images"] == 12 and remote["num_failed"] == 0, name
        if "per_label_ap" in local:
            assert remote["per_label_ap"] == pytest.approx(local["per_label_ap"], abs=1e-6), name


def test_a_job_that_cannot_be_placed_is_reported_as_stalled_not_waited_on():
    """In its own process: the stalled job's executor stays blocked after the report, and a driver that
    shuts Ray down under it may exit; that must not be this test process."""
    script = (
        "import os, time\n"
        "from zsclip.cluster import RaySettings, connect\n"
        "from zsclip.cluster.session import watched\n"
        "from zsclip.errors import InputError\n"
        "ray = connect(RaySettings(num_cpus=1))\n"
        "dataset = ray.data.from_items([{'a': 1}]).map_batches(lambda b: b, resources={'no-such-node': 1})\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    list(watched(dataset.iter_batches(), 3))\n"
        "except InputError as error:\n"
        "    print('stalled', round(time.monotonic() - started), error, flush=True)\n"
        "os._exit(0)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    line = next((line for line in result.stdout.splitlines() if line.startswith("stalled")), "")
    assert "made no progress for 3 s" in line, result.stdout + result.stderr
    assert int(line.split()[1]) < 20


def test_ray_options_without_ray_are_refused():
    for option in (["--ray-actors", "2"], ["--ray-stall-timeout", "30"]):
        result = CliRunner().invoke(main, ["classify", "x.png", "--labels", "a,b", *option])
        assert result.exit_code == 2 and f"{option[0]} applies to --ray" in result.output


def test_videos_decoded_in_ray_tasks_give_the_local_rows_and_spans(demo, tmp_path, monkeypatch):
    pytest.importorskip("av")
    import zsclip.cluster.media

    monkeypatch.setattr(zsclip.cluster.media, "SEGMENTS_PER_TASK", 1)  # each segment its own task
    rng = random.Random(4)
    red, blue = shapes.sample_spec(rng, [("red", "circle")]), shapes.sample_spec(rng, [("blue", "square")])
    shapes.write_video(tmp_path / "change.mp4", shapes.video_frames(red, 4, 8, change_to=blue), 8)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    shapes.render(red).save(tmp_path / "photo.png")
    labels = ["red circle", "blue square", "green star"]
    options = OPTIONS.with_(segment=2.0, frames=2)
    local = list(zsclip.classify(tmp_path, labels, encoder=demo, options=options))
    remote = list(zsclip.classify(tmp_path, labels, encoder=demo, options=options, ray=RaySettings()))
    assert [(r.source, r.start, r.end, r.error is None) for r in remote] == [
        (r.source, r.start, r.end, r.error is None) for r in local]
    assert [r.labels[:1] for r in remote] == [r.labels[:1] for r in local]
    assert [r.labels[0] for r in remote if r.start is not None] == ["red circle", "blue square"]


def test_a_hugging_face_parquet_split_on_ray_gives_the_local_eval(demo, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = sorted(EXAMPLES.glob("*.png"))
    names = [p.stem for p in images]
    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64())], metadata={"huggingface": json.dumps({"info": {"features": features}})})
    records = [{"image": {"bytes": p.read_bytes(), "path": p.name}, "label": i} for i, p in enumerate(images)]
    pq.write_table(pa.Table.from_pylist(records, schema=schema), tmp_path / "test.parquet", row_group_size=3)
    local = zsclip.evaluate(tmp_path / "test.parquet", demo, ["photo"], options=OPTIONS)
    remote = zsclip.evaluate(tmp_path / "test.parquet", demo, ["photo"], options=OPTIONS, ray=RaySettings())
    assert remote.metrics["photo"]["acc1"] == local.metrics["photo"]["acc1"] == 1.0


def test_a_store_of_video_segments_on_ray_keeps_the_spans(demo, tmp_path):
    pytest.importorskip("av")
    rng = random.Random(5)
    red, blue = shapes.sample_spec(rng, [("red", "circle")]), shapes.sample_spec(rng, [("blue", "square")])
    shapes.write_video(tmp_path / "change.mp4", shapes.video_frames(red, 4, 8, change_to=blue), 8)
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "change.mp4"), "--model", "demo", "-j", "0",
                                       "--segment", "2", "-o", str(tmp_path / "s.zse")])
    assert result.exit_code == 0, result.output
    labels = ["red circle", "blue square"]
    local = list(zsclip.classify(tmp_path / "s.zse", labels))
    remote = list(zsclip.classify(tmp_path / "s.zse", labels, ray=RaySettings()))
    assert [(r.start, r.end, r.labels[0]) for r in remote] == [(r.start, r.end, r.labels[0]) for r in local] == [
        (0.0, 2.0, "red circle"), (2.0, 4.0, "blue square")]


# --- The actor pool's own cases, last: they end, replace or crash the module's warm pool, which the
# cases above share (each cold start costs seconds).


def test_a_later_job_takes_the_warm_actors_and_an_idle_pool_is_released(demo, tree):
    """The driver keeps its encoding actors between jobs: the second job runs on the same actors (the
    same answers), a job that asks for no keeping ends them, and so does the idle timer."""
    from zsclip.cluster import actors

    sources = list(expand_inputs([str(tree)]))
    first = list(ray_feature_batches(sources, demo, OPTIONS, RaySettings()))
    pool = actors._pool
    assert pool is not None and not pool.busy and len(pool.actors) == 1
    handles = list(pool.actors)
    second = list(ray_feature_batches(sources, demo, OPTIONS, RaySettings(keep_actors_s=0.5)))
    assert [n for n, _, _ in second] == [n for n, _, _ in first]
    assert all(torch.equal(a, b) for (*_, a), (*_, b) in zip(first, second, strict=True))
    assert [a._actor_id for a in pool.actors] == [a._actor_id for a in handles]  # the warm actors served it
    deadline = time.monotonic() + 20
    while actors._pool is not None and time.monotonic() < deadline:  # the 0.5 s idle timer ends them
        time.sleep(0.1)
    assert actors._pool is None
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(handles[0].ready.remote(), timeout=20)
    list(ray_feature_batches(sources, demo, OPTIONS, RaySettings(keep_actors_s=0)))
    assert actors._pool is None  # no keeping asked for: ended with the job


class CrashOnce(EncodeActor):
    """An encoding actor whose process dies on its first batch (once per marker file; the class, and
    so its marker, travels to the workers by value)."""

    marker = ""
    driver = 0  # the test process: never ended here (an actor run in it would end the whole pytest run)

    def __call__(self, batch):
        marker = Path(self.marker)
        if not marker.exists():
            marker.write_text("crashed")
            if os.getpid() == self.driver:
                raise RuntimeError("the crashing actor ran in the test process, not in a Ray worker")
            os._exit(1)
        return super().__call__(batch)


def test_a_dead_actor_is_replaced_and_its_batch_retried(demo, tree, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    CrashOnce.marker, CrashOnce.driver = str(tmp_path / "crashed"), os.getpid()
    sources = list(expand_inputs([str(tree)]))
    remote = list(ray_feature_batches(sources, demo, OPTIONS, RaySettings(keep_actors_s=0), actor=CrashOnce))
    assert (tmp_path / "crashed").read_text() == "crashed"  # the actor did die
    assert sum(len(n) for n, _, _ in remote) == 16 and sum(len(f) for *_, f in remote) == 15


def test_an_actor_that_loads_other_weights_is_one_line_and_its_pool_is_not_kept(demo):
    from types import SimpleNamespace

    from zsclip.cluster import actors

    other = SimpleNamespace(device=torch.device("cpu"), image_transform=demo.image_transform,
                            image_size=demo.image_size, name="demo", fingerprint="open_clip:w2:other")
    sources = list(expand_inputs([str(EXAMPLES)]))
    with pytest.raises(InputError, match=r"^the model loaded on a Ray worker \(demo, open_clip:w2:\w+\) differs "
                                         r"from the driver's \(open_clip:w2:other\)"):
        list(ray_feature_batches(sources, other, OPTIONS, RaySettings(stall_timeout_s=120)))
    assert actors._pool is None


def test_a_command_starts_its_actors_before_its_own_model_loads_and_checks_them(demo, tree, monkeypatch, tmp_path):
    """A planned job (the CLI's path) starts the pool before the driver loads its model; the job takes
    that pool (one pool in all), checks the actors' fingerprints against its model, and gives the
    local embeddings. A driver whose model differs from the actors' is told so in one line."""
    from types import SimpleNamespace

    from zsclip.cluster import actors
    from zsclip.cluster.pipeline import prestart

    actors.release_pool()
    made = []
    monkeypatch.setattr(actors.EncoderPool, "__init__", _counted(actors.EncoderPool.__init__, made))
    labels = ["red circle", "blue square"]
    rows = list(zsclip.classify(tree, labels=labels, model="demo", options=OPTIONS, ray=RaySettings()))
    assert len(made) == 1 and made[0].spec.fingerprint is None  # started before the model loaded
    assert actors._pool is made[0] and actors._pool.fingerprint == demo.fingerprint  # checked by the job
    local = list(zsclip.classify(tree, labels=labels, model="demo", options=OPTIONS))
    assert [(r.source, r.labels, r.error) for r in rows] == [(r.source, r.labels, r.error) for r in local]
    assert all(a.scores == pytest.approx(b.scores, abs=1e-6) for a, b in zip(rows, local, strict=True))
    started = []  # `embed --ray` starts its pool before its model loads too (here the warm one fits: kept)
    monkeypatch.setattr(actors, "start", _counted_call(actors.start, started))
    embedded = CliRunner().invoke(main, ["embed", str(tree), "-m", "demo", "--precision", "fp32", "-b", "4", "-j", "0",
                                         "--ray", "auto", "-o", str(tmp_path / "s.zse")])
    assert embedded.exit_code == 1 and "15 encoded" in embedded.stderr, embedded.output
    assert [(spec.model, spec.fingerprint) for spec in started] == [("demo", None)] and len(made) == 1

    sources = list(expand_inputs([str(tree)]))
    actors.release_pool()
    prestart("demo", None, OPTIONS, RaySettings())
    other = SimpleNamespace(device=torch.device("cpu"), image_transform=demo.image_transform,
                            image_size=demo.image_size, name="demo", fingerprint="open_clip:w2:other")
    with pytest.raises(InputError, match=r"^the model loaded on a Ray worker \(demo, open_clip:w2:\w+\) differs "
                                         r"from the driver's \(open_clip:w2:other\)"):
        list(ray_feature_batches(sources, other, OPTIONS, RaySettings(stall_timeout_s=120)))
    assert len(made) == 2 and actors._pool is None  # the started pool served it, and was ended with the error


def _counted_call(start, specs: list):
    def recording(ray, actor_class, spec, *args, **kwargs):
        specs.append(spec)
        return start(ray, actor_class, spec, *args, **kwargs)

    return recording


def _counted(init, made: list):
    def counting(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    return counting


def test_a_released_pool_returns_once_ray_has_its_actors_dead():
    """``ray.kill`` is asynchronous: a release returns only when a call to each killed actor has failed here, so a
    ``ray.shutdown()`` right after it does not race this process's handling of the calls that were in flight (that
    race ended the whole test process once, with "Raylet IPC connection failed")."""
    from types import SimpleNamespace

    from zsclip.cluster.actors import EncoderPool

    class Sleeper:  # defined here, so Ray's workers get it by value: calls that take a while, still in flight
        def __init__(self, spec) -> None:
            self.spec = spec

        def ready(self) -> str:
            return "ready"

        def encode_block(self, seconds: float, rows=None) -> float:
            time.sleep(seconds)
            return seconds

    pool = EncoderPool(ray, Sleeper, SimpleNamespace(fingerprint="f"), 2, {"num_cpus": 0}, key="sleepers")
    assert pool.ready()
    in_flight = [actor.encode_block.remote(30.0) for actor in pool.actors for _ in range(2)]
    killed = list(pool.actors)
    started = time.monotonic()
    pool.release()
    assert time.monotonic() - started < 10
    probes = [actor.ready.remote() for actor in killed]
    done, _ = ray.wait(probes + in_flight, num_returns=len(probes) + len(in_flight), timeout=0)
    assert len(done) == len(probes) + len(in_flight)  # every call on them has already failed
    for reference in probes + in_flight:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(reference)
