"""Videos wherever images go: sampled frames, pooled answers, segments with their spans, and hostile
files (each built here with PyAV) costing one error row that names the file."""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

av = pytest.importorskip("av")

import zsclip  # noqa: E402
from zsclip import shapes  # noqa: E402
from zsclip.cli import main  # noqa: E402
from zsclip.data.video import Sampling, is_note, plan_clips, read_clips  # noqa: E402
from zsclip.errors import ImageReadError  # noqa: E402

LABELS = ["red circle", "blue square", "green star"]
OPTIONS = zsclip.RunOptions(precision="fp32", workers=0, batch_size=8)
CLI = ["--model", "demo", "--precision", "fp32", "-j", "0", "-b", "8"]


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A red circle that becomes a blue square at 2 s, a red circle, a photo, and hostile files."""
    root = tmp_path_factory.mktemp("videos")
    rng = random.Random(0)
    red = shapes.sample_spec(rng, [("red", "circle")])
    blue = shapes.sample_spec(rng, [("blue", "square")])
    shapes.write_video(root / "change.mp4", shapes.video_frames(red, 4, 8, change_to=blue), 8)
    shapes.write_video(root / "red.mkv", shapes.video_frames(red, 2, 8), 8)
    shapes.render(blue).save(root / "photo.png")
    return root


def test_sampling_plans_uniform_frames_and_bounded_segments():
    (clip,), note = plan_clips(4.0, Sampling(frames=4))
    assert clip.times == [0.5, 1.5, 2.5, 3.5] and note is None
    segments, note = plan_clips(10.0, Sampling(frames=1, segment=3.0))
    assert [(c.start, c.end) for c in segments] == [(0, 3), (3, 6), (6, 9), (9, 10)] and note is None
    segments, note = plan_clips(3 * 3600.0, Sampling(frames=2, segment=1.0, max_frames=10))
    assert len(segments) == 5 and "cut at 5.0 s" in note


def test_only_the_sampled_frames_are_decoded_at_their_times(clips):
    (clip,), _, info = read_clips(str(clips / "change.mp4"), Sampling(frames=8))
    assert info.duration == pytest.approx(4.0) and len(clip.frames) == 8
    colours = [frame.getpixel((32, 32)) for frame in clip.frames]
    assert all(c[0] > 150 for c in colours[:4]) and all(c[2] > 150 for c in colours[4:])  # red, then blue


def test_a_video_is_the_mean_of_its_normalised_frame_embeddings(clips, demo):
    (clip,), _, _ = read_clips(str(clips / "change.mp4"), Sampling(frames=4))
    transform = demo.image_transform()
    frames = demo.encode_images(torch.stack([transform(f) for f in clip.frames]), "fp32")
    expected = torch.nn.functional.normalize(frames.mean(0), dim=-1)
    job = zsclip.job.plan(zsclip.job.open_source(str(clips / "change.mp4")), zsclip.job.HeadOptions(labels=LABELS),
                          encoder=demo, run=OPTIONS.with_(frames=4))
    (batch,) = list(job.features())
    assert batch.spans == [(0.0, 4.0)]
    assert torch.allclose(batch.features[0], expected, atol=1e-5)


def test_segments_answer_when_the_shape_changes(clips, demo):
    rows = list(zsclip.classify(clips / "change.mp4", LABELS, encoder=demo, options=OPTIONS.with_(segment=1.0,
                                                                                                   frames=2)))
    assert [(r.start, r.end) for r in rows] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [r.labels[0] for r in rows] == ["red circle"] * 2 + ["blue square"] * 2


@pytest.mark.parametrize("extension", [".csv", ".jsonl", ".parquet"])
def test_a_folder_mixing_photos_and_videos_writes_spans(clips, tmp_path, extension):
    out = tmp_path / f"rows{extension}"
    result = CliRunner().invoke(main, ["classify", str(clips), "--labels", ",".join(LABELS), *CLI, "--segment", "2",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    if extension == ".csv":
        rows = list(csv.DictReader(out.open()))
    elif extension == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    spans = [(r["path"].rsplit("/", 1)[-1], r["start"], r["end"]) for r in rows]
    values = [(name, float(s) if s not in ("", None) else None, float(e) if e not in ("", None) else None)
              for name, s, e in spans]
    assert values == [("change.mp4", 0.0, 2.0), ("change.mp4", 2.0, 4.0), ("photo.png", None, None),
                      ("red.mkv", 0.0, 2.0)]


def test_eval_reads_class_folders_of_videos(tmp_path):
    shapes.write_video_dataset(tmp_path / "data", 1, 5, split="seen", seconds=1, fps=4)
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "data"), *CLI, "--frames", "2",
                                       "-o", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["metrics"]["acc1"] > 0.5 if "metrics" in metrics else metrics["acc1"] > 0.5


# hostile videos -------------------------------------------------------------------------------------------


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=800)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def hostile(clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    good = (clips / "change.mp4").read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "text.mp4").write_bytes(b"this is not a video at all\n" * 10)
    _audio_only(root / "audio.mkv")
    (root / "video.jpg").write_bytes(good)  # a video with an image's extension
    rng = random.Random(1)
    red = shapes.sample_spec(random.Random(0), [("red", "circle")])
    longer = shapes.write_video(root / "longer.mkv", shapes.video_frames(red, 8, 8), 8).read_bytes()
    (root / "longer.mkv").unlink()
    (root / "cut.mkv").write_bytes(longer[: len(longer) * 6 // 10])
    corrupt = bytearray(longer)
    for position in rng.sample(range(len(longer) // 2, len(longer)), 40):  # bit flips in the second half
        corrupt[position] ^= 0xFF
    (root / "corrupt.mkv").write_bytes(bytes(corrupt))
    # Motion JPEG whose every frame says 40000 x 40000 (1.6 gigapixels) over 64 x 64 of data
    mjpeg = bytearray(shapes.write_video(root / "huge.avi", shapes.video_frames(red, 1, 4), 4, codec="mjpeg")
                      .read_bytes())
    start = mjpeg.find(b"\xff\xc0")
    while start >= 0:
        mjpeg[start + 5 : start + 9] = (40000).to_bytes(2, "big") * 2
        start = mjpeg.find(b"\xff\xc0", start + 2)
    (root / "huge.avi").write_bytes(bytes(mjpeg))
    shapes.render(shapes.sample_spec(rng, [("green", "star")])).save(root / "star.png")
    return root


def test_hostile_videos_cost_one_row_each_and_the_rest_goes_on(hostile, demo):
    rows = list(zsclip.classify(hostile, LABELS, encoder=demo, options=OPTIONS))
    by_name = {r.source.rsplit("/", 1)[-1]: r for r in rows if not is_note(r.error)}
    notes = {r.source.rsplit("/", 1)[-1]: r.error for r in rows if is_note(r.error)}
    assert list(notes) == ["cut.mkv"] and "the data ends at" in notes["cut.mkv"]  # cut: a note beside its row
    assert set(by_name) == {"empty.mp4", "truncated.mp4", "text.mp4", "audio.mkv", "video.jpg", "corrupt.mkv",
                            "cut.mkv", "star.png", "huge.avi"}
    assert by_name["huge.avi"].error  # refused by FFmpeg's decoder (the header's size by zsclip: next test)
    assert by_name["empty.mp4"].error == "empty file"
    assert "not a video" in by_name["truncated.mp4"].error
    assert "not a video" in by_name["text.mp4"].error
    assert by_name["audio.mkv"].error == "no video stream in this file"
    assert by_name["video.jpg"].error is None and by_name["video.jpg"].start == 0.0  # sniffed as a video
    assert by_name["star.png"].labels[0] == "green star"
    for name in ("corrupt.mkv", "cut.mkv"):  # the frames that decode answer
        assert by_name[name].error is None and by_name[name].labels[0] == "red circle", by_name[name]


def test_corrupt_packets_cost_their_own_segments(hostile, demo):
    rows = list(zsclip.classify(hostile / "corrupt.mkv", LABELS, encoder=demo,
                                options=OPTIONS.with_(segment=1.0, frames=1)))
    assert [(r.start, r.end) for r in rows] == [(float(s), float(s + 1)) for s in range(8)]
    assert rows[0].error is None and rows[0].labels[0] == "red circle"
    assert all(r.error is None or r.error.startswith(f"no frame decoded in {r.start:.2f}-") for r in rows)


def test_a_portrait_phone_video_is_read_upright(tmp_path):
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation")
    image = Image.new("RGB", (64, 32), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 16, 16))  # a red mark top left as stored (sideways)
    with av.open(str(tmp_path / "phone.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # shown turned a quarter counter-clockwise: the mark goes bottom left
        for index in range(4):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (clip,), _, _ = read_clips(str(tmp_path / "phone.mp4"), Sampling(frames=1))
    (frame,) = clip.frames
    assert frame.size == (32, 64)
    assert frame.getpixel((4, 60))[0] > 200 and frame.getpixel((4, 4))[0] < 60


def test_frames_over_the_pixel_limit_are_refused_from_the_header(clips):
    with pytest.raises(ImageReadError, match="over the limit"):
        read_clips(str(clips / "change.mp4"), Sampling(), max_pixels=1000)


def test_an_hours_long_video_is_bounded_in_frames_and_time(tmp_path, demo):
    path = tmp_path / "long.mkv"
    frame = shapes.render(shapes.sample_spec(random.Random(2), [("red", "circle")]), 32)
    with av.open(str(path), "w") as container:  # 3 hours at 1 frame a second, a keyframe every 10 minutes
        stream = container.add_stream("mpeg4", rate=1)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 600
        video_frame = av.VideoFrame.from_image(frame)
        for index in range(3 * 3600):
            video_frame.pts = index
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    started = time.perf_counter()
    (clip,), _, info = read_clips(str(path), Sampling(frames=8))
    assert info.duration == pytest.approx(3 * 3600, rel=1e-3) and len(clip.frames) == 8
    rows = list(zsclip.classify(path, LABELS, encoder=demo, options=OPTIONS.with_(segment=60.0, frames=1,
                                                                                  max_video_frames=20)))
    assert len(rows) == 21 and rows[-1].error.startswith("note: video cut at 1200.0 s")
    assert all(r.error is None for r in rows[:-1])
    assert time.perf_counter() - started < 60


def test_embed_a_row_per_segment_then_search_finds_the_video_and_its_span(clips, tmp_path):
    store = tmp_path / "videos.zse"
    embed = ["embed", str(clips), *CLI, "--segment", "2", "--frames", "2", "-o", str(store)]
    result = CliRunner().invoke(main, embed)
    assert result.exit_code == 0, result.output
    hits = tmp_path / "hits.jsonl"
    result = CliRunner().invoke(main, ["search", str(store), "a blue square", "-k", "2", "-o", str(hits)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in hits.read_text().splitlines()]
    found = {(r["path"].rsplit("/", 1)[-1], r["start"], r["end"]) for r in rows}
    assert found == {("change.mp4", 2.0, 4.0), ("photo.png", None, None)}
    result = CliRunner().invoke(main, ["search", str(store), "a blue square", "-k", "1"])
    assert "[2.00-4.00 s]" in result.output
    # classify from the store gives the spans too; a rerun skips every unchanged file
    rows = list(zsclip.classify(store, LABELS))
    assert sorted((Path(r.source).name, r.start) for r in rows if r.start is not None) == [
        ("change.mp4", 0.0), ("change.mp4", 2.0), ("red.mkv", 0.0)]
    result = CliRunner().invoke(main, embed)
    assert "0 encoded, 3 unchanged" in result.output


def test_a_store_without_video_rows_reads_as_before(tmp_path, demo):
    from zsclip.store import EmbeddingStore, embed

    shapes.render(shapes.sample_spec(random.Random(3), [("red", "circle")])).save(tmp_path / "a.png")
    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32")
    embed(store, list(zsclip.data.expand_inputs([str(tmp_path / "a.png")])), demo, OPTIONS)
    import pyarrow.parquet as pq

    (shard,) = (tmp_path / "s.zse").glob("shard-*.parquet")
    assert "start" not in pq.read_schema(shard).names  # the format is unchanged for photos
    (row,) = zsclip.classify(tmp_path / "s.zse", LABELS)
    assert row.start is None and row.labels[0] == "red circle"


def test_the_service_answers_an_uploaded_video_within_its_limits(clips):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from zsclip.serve.app import create_app
    from zsclip.serve.settings import Limits, ServeSettings

    settings = ServeSettings(default_templates="photo", limits=Limits(max_video_seconds=3.0, max_video_frames=16))
    video = (clips / "red.mkv").read_bytes()
    with TestClient(create_app(settings)) as client:
        files = [("images", ("red.mkv", video, "video/x-matroska")),
                 ("images", ("photo.png", (clips / "photo.png").read_bytes(), "image/png")),
                 ("images", ("long.mp4", (clips / "change.mp4").read_bytes(), "video/mp4")),
                 ("images", ("renamed.png", video, "image/png"))]
        response = client.post("/v1/classify", files=files, data={"labels": ",".join(LABELS), "frames": "4"})
        assert response.status_code == 200, response.text
        red, photo, long, renamed = response.json()["results"]
        assert red["predictions"][0]["label"] == "red circle" and (red["start"], red["end"]) == (0.0, 2.0)
        assert photo["predictions"][0]["label"] == "blue square" and photo["start"] is None
        assert "over the limit of 3 s" in long["error"]
        assert renamed["predictions"][0]["label"] == "red circle"  # a video whatever its name
        too_many = client.post("/v1/classify", files=files[:1], data={"labels": ",".join(LABELS), "frames": "17"})
        assert too_many.status_code == 422 and "frames 17" in too_many.json()["error"]


def test_a_video_split_into_parts_gives_the_rows_of_the_whole(clips, demo):
    from zsclip.cluster.media import split_videos
    from zsclip.data.sources import Source
    from zsclip.pipeline.media import MediaItems, VideoPart, aggregate

    sampling = Sampling(frames=2, segment=1.0)
    items = [Source(str(clips / "change.mp4")), Source(str(clips / "photo.png"))]
    parts = split_videos(items, [4, None], per_task=3)
    assert parts[:2] == [VideoPart(items[0], 0, 3), VideoPart(items[0], 3, 4)] and parts[2] == items[1]

    def rows(units):
        dataset = MediaItems(units, demo.image_transform(), demo.image_size, sampling=sampling)
        (batch,) = aggregate((dataset[i] for i in range(len(dataset))),
                             lambda pixels: demo.encode_images(pixels, "fp32"), 64, demo.embed_dim)
        return batch

    whole, split = rows(items), rows(parts)
    assert (split.ids, split.spans, split.errors) == (whole.ids, whole.spans, whole.errors)
    assert torch.allclose(split.features, whole.features, atol=1e-6)


def test_per_video_rows_are_derived_from_a_segment_store(clips, tmp_path, demo):
    store = tmp_path / "segments.zse"
    result = CliRunner().invoke(main, ["embed", str(clips), *CLI, "--segment", "1", "--frames", "2", "-o", str(store)])
    assert result.exit_code == 0, result.output
    rows = list(zsclip.classify(store, LABELS, per_video=True))
    spans = {Path(r.source).name: (r.start, r.end) for r in rows}
    assert spans == {"change.mp4": (0.0, 4.0), "red.mkv": (0.0, 2.0), "photo.png": (None, None)}
    # pooling 4 one-second segments of 2 frames each ~ sampling 8 frames of the whole video
    direct = {Path(r.source).name: r for r in zsclip.classify(clips, LABELS, encoder=demo,
                                                              options=OPTIONS.with_(frames=8))}
    for row in rows:
        assert row.labels[0] == direct[Path(row.source).name].labels[0]
    out = tmp_path / "videos.csv"
    result = CliRunner().invoke(main, ["classify", str(store), "--labels", ",".join(LABELS), "--per-video",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [line.split(",")[:3] for line in out.read_text().splitlines()[1:]][0][1:] == ["0.000", "4.000"]
    refused = CliRunner().invoke(main, ["classify", str(clips / "photo.png"), "--labels", "a,b", *CLI,
                                        "--per-video"])
    assert refused.exit_code == 2 and "--per-video pools video clips" in refused.output


def test_embedding_photos_into_a_store_with_clips_keeps_the_clips(clips, tmp_path):
    store = tmp_path / "mixed.zse"
    assert CliRunner().invoke(main, ["embed", str(clips / "change.mp4"), *CLI, "--segment", "2",
                                     "-o", str(store)]).exit_code == 0
    result = CliRunner().invoke(main, ["embed", str(clips / "photo.png"), *CLI, "-o", str(store)])
    assert result.exit_code == 0 and "0 gone" in result.output, result.output
    assert len(zsclip.store.EmbeddingStore.open(store)) == 3


# containers: the frames at the sampled times, with the stream's own start and duration ---------------------

FPS = 8
CONTAINERS = [("mp4", "libx264", None), ("ts", "libx264", "mpegts"), ("ts", "mpeg4", "mpegts"),
              ("mkv", "libx264", None), ("webm", "libvpx", None), ("webm", "libvpx-vp9", None)]


def _numbered(index: int) -> Image.Image:
    """A frame that shows its own number: 8 black / white blocks for its bits (any codec keeps them)."""
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    for bit in range(8):
        image.paste((255, 255, 255) if index >> bit & 1 else (0, 0, 0), (bit * 8, 0, bit * 8 + 8, 16))
    return image


def _number_of(image: Image.Image) -> int:
    grey = image.convert("L")
    return sum(1 << bit for bit in range(8) if grey.crop((bit * 8 + 2, 2, bit * 8 + 6, 14)).getextrema()[0] > 128)


def _write(path: Path, frames, codec: str, container_format: str | None, start_s: float, times=None) -> Path:
    """``frames`` encoded by PyAV at FPS frames a second, the first at ``start_s`` (or at ``times``)."""
    from fractions import Fraction

    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.gop_size = 5 * FPS  # keyframes 5 s apart: a seek must land before the sample
        stream.codec_context.bit_rate = 2_000_000
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.time_base = Fraction(1, 1000) if times else Fraction(1, FPS)
            frame.pts = round((times[index] + start_s) * 1000) if times else index + round(start_s * FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _available(codec: str):
    return pytest.param(marks=pytest.mark.skipif(codec not in av.codecs_available, reason=f"no {codec} in this av"))


@pytest.mark.parametrize(("extension", "codec", "container_format"),
                         [pytest.param(*case, marks=_available(case[1]).marks, id=f"{case[0]}-{case[1]}")
                          for case in CONTAINERS])
def test_every_container_gives_the_frames_at_the_sampled_times(tmp_path, extension, codec, container_format):
    path = _write(tmp_path / f"numbered.{extension}", [_numbered(i) for i in range(10 * FPS)], codec,
                  container_format, start_s=10.0)
    for sampling in (Sampling(frames=8), Sampling(frames=3, segment=1.0), Sampling(frames=12, segment=1.0)):
        clips, note, info = read_clips(str(path), sampling)
        assert info.duration == pytest.approx(10.0) and note is None  # the stream's, not the container's end
        assert [(c.start, c.end) for c in clips][-1][1] == pytest.approx(10.0)
        for clip in clips:
            assert clip.error is None and len(clip.frames) == len(clip.times), clip
            shown = [_number_of(frame) for frame in clip.frames]
            on_screen = [min(int(t * FPS + 0.5), 10 * FPS - 1) for t in clip.times]  # the nearest frame
            assert shown == on_screen, (sampling, clip.start, shown)


def test_a_gap_in_a_variable_rate_stream_gives_the_frame_on_screen(tmp_path):
    times = [i / FPS for i in range(FPS)] + [3 + i / FPS for i in range(FPS)]  # nothing from 1 s to 3 s
    path = _write(tmp_path / "gap.mkv", [_numbered(i) for i in range(len(times))], "libx264", None, 10.0, times)
    clips, _, info = read_clips(str(path), Sampling(frames=1, segment=0.5))
    assert info.duration == pytest.approx(4.0, abs=0.2)
    shown = {clip.start: _number_of(clip.frames[0]) for clip in clips}
    assert shown[2.0] == FPS - 1  # at 2.25 s the last frame before the gap is on screen, not the one at 3 s
    assert shown[3.0] == FPS + 2 and shown[0.0] == 2


@pytest.mark.slow
def test_videos_in_every_container_answer_per_segment_through_the_command(tmp_path):
    rng = random.Random(0)
    red = shapes.render(shapes.sample_spec(rng, [("red", "circle")]))
    blue = shapes.render(shapes.sample_spec(rng, [("blue", "square")]))
    frames = [red] * (2 * FPS) + [blue] * (2 * FPS)
    for extension, codec, container_format in CONTAINERS:
        if codec in av.codecs_available:
            _write(tmp_path / f"{codec}.{extension}", frames, codec, container_format, start_s=10.0)
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(main, ["classify", str(tmp_path), "--labels", ",".join(LABELS), *CLI,
                                       "--segment", "1", "--frames", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(newline="")))
    by_video: dict[str, list] = {}
    for row in rows:
        by_video.setdefault(Path(row["path"]).name, []).append((row["start"], row["end"], row["label"]))
    assert len(by_video) >= 4
    for name, got in by_video.items():
        assert got == [("0.000", "1.000", "red circle"), ("1.000", "2.000", "red circle"),
                       ("2.000", "3.000", "blue square"), ("3.000", "4.000", "blue square")], name


# the sampling of stored clips ----------------------------------------------------------------------------------


def _spans_in(store: Path) -> dict:
    spans: dict = {}
    for batch in zsclip.store.EmbeddingStore.open(store).batches():
        for path, span in zip(batch.paths, batch.spans or [None] * len(batch.paths), strict=True):
            spans.setdefault(Path(path).name, []).append(span)
    return {name: sorted(s, key=str) for name, s in spans.items()}


@pytest.mark.slow
def test_a_store_keeps_its_video_sampling_and_refuses_or_reembeds_another(clips, tmp_path):
    store = tmp_path / "clips.zse"
    first = ["embed", str(clips), *CLI, "--segment", "2", "--frames", "2", "-o", str(store)]
    assert CliRunner().invoke(main, first).exit_code == 0
    manifest = json.loads((store / "zsclip-store.json").read_text())
    assert manifest["video_sampling"] == {"frames": 2, "segment": 2.0, "max_frames": 256}
    before = _spans_in(store)
    assert before["change.mp4"] == [(0.0, 2.0), (2.0, 4.0)]
    other = ["embed", str(clips), *CLI, "--segment", "1", "--frames", "2", "-o", str(store)]
    refused = CliRunner().invoke(main, other)
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output
    assert ("--frames 2 --segment 2 --max-video-frames 256, not --frames 2 --segment 1 --max-video-frames 256"
            in refused.output and "--reembed" in refused.output and "new store path" in refused.output)
    assert _spans_in(store) == before  # nothing was added beside the old clips
    partial = CliRunner().invoke(main, ["embed", str(clips / "red.mkv"), *other[2:], "--reembed"])
    assert partial.exit_code == 2 and "1 of them are not among the inputs" in partial.output, partial.output
    assert _spans_in(store) == before  # refused before anything changed
    result = CliRunner().invoke(main, [*other, "--reembed"])
    assert result.exit_code == 0, result.output
    after = _spans_in(store)
    assert after["change.mp4"] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]
    assert after["red.mkv"] == [(0.0, 1.0), (1.0, 2.0)] and after["photo.png"] == [None]
    manifest = json.loads((store / "zsclip-store.json").read_text())
    assert manifest["video_sampling"] == {"frames": 2, "segment": 1.0, "max_frames": 256}
    assert "0 encoded, 3 unchanged" in CliRunner().invoke(main, other).output  # the new settings are the store's


def test_a_mismatched_or_unfinished_sampling_is_refused_before_the_model_loads(clips, tmp_path, demo, monkeypatch):
    from zsclip.store import EmbeddingStore

    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32")
    store.record_video_sampling({"frames": 8, "segment": None, "max_frames": 256})

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("zsclip.encoders.resolve.resolve_model", no_model)
    result = CliRunner().invoke(main, ["embed", str(clips / "change.mp4"), *CLI, "--segment", "2",
                                       "-o", str(tmp_path / "s.zse")])
    assert result.exit_code == 2 and "sampled with --frames 8 --max-video-frames 256, not --frames 8 --segment 2" \
        in result.output, result.output
    store.record_video_sampling({"frames": 8, "segment": 2.0, "max_frames": 256}, unfinished=True)
    result = CliRunner().invoke(main, ["embed", str(clips / "change.mp4"), *CLI, "--segment", "2",
                                       "-o", str(tmp_path / "s.zse")])
    assert result.exit_code == 2 and "did not finish" in result.output and "--reembed" in result.output
    photos = CliRunner().invoke(main, ["embed", str(clips / "photo.png"), *CLI, "--reembed",
                                       "-o", str(tmp_path / "s.zse")])
    assert photos.exit_code == 2 and "there is no video among the inputs" in photos.output


# messages that say what happened ---------------------------------------------------------------------------------


def _faststart_cut(path: Path, source: Path) -> Path:
    """``source`` remuxed with its index first (as streaming services write MP4), then cut at 60%: the header
    says the whole length, the data stops early."""
    whole = path.with_name("whole-" + path.name)
    with av.open(str(source)) as reader, av.open(str(whole), "w", options={"movflags": "faststart"}) as writer:
        stream = writer.add_stream_from_template(reader.streams.video[0])
        for packet in reader.demux(reader.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                writer.mux(packet)
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


@pytest.mark.parametrize("kind", [pytest.param("mkv", marks=pytest.mark.slow), "mp4"])
def test_a_cut_video_is_a_note_and_its_readable_part_gives_rows(clips, hostile, tmp_path, kind):
    cut = hostile / "cut.mkv" if kind == "mkv" else _faststart_cut(tmp_path / "cut.mp4", clips / "change.mp4")
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(main, ["classify", str(cut), "--labels", ",".join(LABELS), *CLI,
                                                       "--segment", "1", "--frames", "1", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "skipped" not in result.stderr and f"zsclip: note: {cut}: the data ends at " in result.stderr
    rows = list(csv.DictReader(out.open(newline="")))
    answered = [r for r in rows if not r["error"]]
    assert answered and all(r["label"] == "red circle" for r in answered)
    assert [r["error"].startswith("note: the data ends at") for r in rows if r["error"]] == [True]
    ends = [float(r["end"]) for r in answered]
    full = 8.0 if kind == "mkv" else 4.0  # the length the file's header gives
    assert f"classified {len(answered)} of {len(answered)}" in result.stderr and max(ends) < full
    assert f"of the {full:.1f} s the file says it lasts" in result.stderr
    embedded = CliRunner().invoke(main, ["embed", str(cut), *CLI, "--segment", "1", "--frames", "1",
                                         "-o", str(tmp_path / "cut.zse")])  # embed too: the clips, and a note
    assert embedded.exit_code == 0 and "0 failed" in embedded.stderr, embedded.stderr
    assert f"zsclip: note: {cut}: the data ends at " in embedded.stderr
    assert len(zsclip.store.EmbeddingStore.open(tmp_path / "cut.zse")) == len(answered)


def test_video_options_without_a_video_get_a_note(clips, tmp_path):
    result = CliRunner().invoke(main, ["classify", str(clips / "photo.png"), "--labels",
                                                       ",".join(LABELS), *CLI, "--segment", "2"])
    assert result.exit_code == 0, result.stderr
    assert "zsclip: note: --segment applies to videos as they are decoded, and there is no video among the " \
           "inputs" in result.stderr
    quiet = CliRunner().invoke(main, ["classify", str(clips), "--labels", ",".join(LABELS), *CLI,
                                                      "--segment", "2"])
    assert quiet.exit_code == 0 and "note: --segment" not in quiet.stderr  # videos among the inputs: no note


@pytest.mark.parametrize("command", ["search", "sort"])
def test_search_and_sort_note_video_options_without_a_video_too(clips, tmp_path, command):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(clips / "photo.png", photos / "photo.png")
    args = {"search": ["search", str(photos), "a blue square", "--model", "demo", "-j", "0"],
            "sort": ["sort", str(photos), "--labels", ",".join(LABELS), *CLI, "--into", str(tmp_path / "sorted"),
                     "--accept", "0.5"]}
    result = CliRunner().invoke(main, [*args[command], "--frames", "3"])
    assert result.exit_code == 0, result.stderr
    assert "zsclip: note: --frames applies to videos as they are decoded, and there is no video among the " \
           "inputs" in result.stderr
    quiet = CliRunner().invoke(main, args[command])
    assert quiet.exit_code == 0 and "note: --frames" not in quiet.stderr  # not given: no note


def test_a_video_query_and_a_manifest_input_say_where_they_go(clips, tmp_path):
    video = CliRunner().invoke(main, ["search", str(clips), "--image", str(clips / "red.mkv"), "--model", "demo"])
    assert video.exit_code == 2 and len(video.stderr.strip().splitlines()) == 1, video.stderr
    assert "is a video: a query is one image" in video.stderr and "give them as INPUT" in video.stderr
    manifest = tmp_path / "labelled.csv"
    manifest.write_text(f"path,label\n{clips / 'photo.png'},blue square\n")
    result = CliRunner().invoke(main, ["classify", str(manifest), "--labels", ",".join(LABELS), *CLI])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"`zsclip eval --data {manifest}`" in result.stderr and "embed" in result.stderr
