"""The matrix for the new sources: every head on a Hugging Face Parquet split and on videos, the same
answer as on the image files (top-1, scores within 1e-5), through the Python API and the CLI.

The videos are the example PNGs, each held still for two seconds and encoded losslessly (FFV1, RGB), so
every sampled frame is the PNG's pixels and the pooled embedding is the PNG's: any difference is the
video path's (sampling, pooling, spans, rows), not the codec's."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import zsclip
from test_job_matrix import CLI_COMMON, HEAD_NAMES, NAMES, OPTIONS, answers_by_name, from_jsonl, heads, same
from test_job_matrix import demo as demo  # noqa: F401  (the fixtures of the image matrix)
from test_job_matrix import reference as reference  # noqa: F401
from test_job_matrix import world as world  # noqa: F401
from zsclip.cli import main

pytestmark = pytest.mark.slow  # the whole matrix is end-to-end: `pytest -m "not slow"` leaves it to CI


@pytest.fixture(scope="module")
def media(world):  # noqa: F811
    root = world / "media"
    root.mkdir(exist_ok=True)
    images = sorted((world / "images").glob("*.png"))
    features = {"image": {"_type": "Image"}, "label": {"names": NAMES, "_type": "ClassLabel"}}
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    records = [{"image": {"bytes": p.read_bytes(), "path": p.name}, "label": i} for i, p in enumerate(images)]
    pq.write_table(pa.Table.from_pylist(records, schema=schema), root / "split.parquet", row_group_size=4)
    try:
        import av
    except ImportError:
        return root
    videos = root / "videos"
    videos.mkdir(exist_ok=True)
    for path in images:
        image = Image.open(path).convert("RGB")
        with av.open(str(videos / f"{path.stem}.mkv"), "w") as container:
            stream = container.add_stream("ffv1", rate=4)
            stream.width, stream.height = image.size
            stream.pix_fmt = "bgr0"
            for index in range(8):
                frame = av.VideoFrame.from_image(image)
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return root


def _rows_key(source: str) -> str:
    """A Parquet row's name (FILE#ROW) -> the example it holds; a video's path -> its stem."""
    if "#" in source:
        return NAMES[int(source.rsplit("#", 1)[1])]
    return Path(source).stem


def _by_example(rows) -> dict:
    return {_rows_key(r.source): answer for r, answer in zip(rows, answers_by_name(rows).values(), strict=True)}


@pytest.mark.parametrize("source", ["parquet", "videos"])
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_every_head_on_hf_parquet_and_videos_python(world, media, reference, head, source):  # noqa: F811
    if source == "videos":
        pytest.importorskip("av")
    kwargs, _ = heads(world)[head]
    target = media / ("split.parquet" if source == "parquet" else "videos")
    rows = list(zsclip.classify(target, model="demo", options=OPTIONS.with_(frames=3), **kwargs))
    if source == "videos":
        assert all((r.start, r.end) == (0.0, 2.0) for r in rows)
    same(reference[head], _by_example(rows))


@pytest.mark.parametrize("source", ["parquet", "videos"])
@pytest.mark.parametrize("head", ["labels", "tree top-down", "reject fixed"])
def test_every_head_on_hf_parquet_and_videos_cli(world, media, reference, head, source, tmp_path):  # noqa: F811
    if source == "videos":
        pytest.importorskip("av")
    _, options = heads(world)[head]
    target = media / ("split.parquet" if source == "parquet" else "videos")
    out = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(main, ["classify", str(target), *options, *CLI_COMMON, "--frames", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    if source == "videos":
        assert all((row["start"], row["end"]) == (0.0, 2.0)
                   for row in map(json.loads, out.read_text().splitlines()))
    got = from_jsonl(out)  # keyed by the stem of a video, by the row number of a Parquet row
    for _, _, record, _ in got.values():
        if record is not None and source == "videos":  # a tree's rows carry the span beside its levels
            assert (record.pop("start"), record.pop("end")) == (0.0, 2.0)
    same(reference[head], {NAMES[int(name)] if name.isdigit() else name: value for name, value in got.items()})


def test_eval_of_videos_and_parquet_equals_the_images(world, media, demo):  # noqa: F811
    pytest.importorskip("av")
    folder = world / "media" / "classes"
    for name in NAMES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / f"{name}.mkv").write_bytes((media / "videos" / f"{name}.mkv").read_bytes())
    videos = zsclip.evaluate(folder, demo, ["photo"], options=OPTIONS)
    parquet = zsclip.evaluate(media / "split.parquet", demo, ["photo"], options=OPTIONS)
    assert videos.metrics["photo"]["acc1"] == parquet.metrics["photo"]["acc1"] == 1.0
