"""Videos and Hugging Face datasets on the demo world (needs PyAV: pip install "zsclip[video]").

    python benchmarks/video_demo.py                  # a few minutes on 2 CPU cores
    python benchmarks/video_demo.py --per-class 4 --hard 0.6

(1) Per-video accuracy: moving-shape videos (``zsclip.shapes.video_frames``; a ``--hard`` fraction of
    frames drawn with noise and a tiny shape, like blur or a far shot), class-per-folder, the 40 seen
    colour-shape pairs: the middle frame alone (--frames 1) vs the mean of N uniform frames.
(2) Segment search: videos whose shape changes halfway (A for 2 s, then B for 2 s), embedded a row per
    2-second segment; for each class, the text query "a photo of a {class}." and its top-R segments,
    R = the number of segments showing that class: R-precision = the share of hits whose segment shows
    that class (the right video *and* the right time span), averaged over the classes.
(3) Decode speed: a 60 s 256x256 H.264 video at 30 fps (a keyframe a second): 8 sampled frames
    (seeking) vs decoding every frame (PyAV, the same library), frames per second of video time.
(4) A Hugging Face Parquet split (Image struct + ClassLabel, written as ``datasets`` writes it) evaluated
    vs the same images as a class-per-folder tree: the same accuracy (the same features).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import zsclip
from zsclip import shapes
from zsclip.data.video import Sampling, read_all_frames, read_clips
from zsclip.job import MediaFiles
from zsclip.store import EmbeddingStore
from zsclip.tasks.embed import embed_media
from zsclip.tasks.search import search


def per_video_accuracy(root: Path, encoder, per_class: int, hard: float, seed: int, frame_counts,
                       hard_style: str = "tiny") -> dict:
    data = shapes.write_video_dataset(root / "videos", per_class, seed, split="seen", seconds=4, fps=8, hard=hard,
                                      hard_style=hard_style)
    results = {}
    for frames in frame_counts:
        options = zsclip.RunOptions(precision="fp32", frames=frames, workers=2)
        result = zsclip.evaluate(data, encoder, ["photo"], options=options)
        results[frames] = result.metrics["photo"]["acc1"]
    return results


def segment_search(root: Path, encoder, per_class: int, seed: int) -> tuple[float, int]:
    rng = random.Random(seed)
    pairs = shapes.combinations("seen")
    truth = {}  # (video, start) -> label
    folder = root / "changes"
    folder.mkdir()
    for number in range(len(pairs) * per_class // 2):
        (a, b) = rng.sample(pairs, 2)
        first, second = shapes.sample_spec(rng, [a]), shapes.sample_spec(rng, [b])
        path = folder / f"{number:04d}.mp4"
        shapes.write_video(path, shapes.video_frames(first, 4, 8, change_to=second, seed=number), 8)
        truth[(str(path), 0.0)], truth[(str(path), 2.0)] = first.label, second.label
    options = zsclip.RunOptions(precision="fp32", segment=2.0, frames=2, workers=2)
    store = EmbeddingStore.create_or_open(root / "changes.zse", encoder, precision="fp32", dtype="float32")
    sources = list(zsclip.data.expand_inputs([str(folder)]))
    embed_media(store, MediaFiles(sources), encoder, options)
    counts = {label: list(truth.values()).count(label) for label in set(truth.values())}
    precisions = []
    for label, relevant in sorted(counts.items()):
        hits = search(str(root / "changes.zse"), f"a photo of a {label}.", top_k=relevant, encoder=encoder)
        precisions.append(sum(truth.get((h.source, h.start)) == label for h in hits) / relevant)
    return sum(precisions) / len(precisions), len(truth)


def decode_speed(root: Path) -> dict:
    rng = random.Random(3)
    spec = shapes.sample_spec(rng, [("red", "circle")])
    frames = shapes.video_frames(spec, 60, 30, 256)
    path = shapes.write_video(root / "long.mp4", frames, 30, keyframe_every=30)
    started = time.perf_counter()
    (clip,), _, _ = read_clips(str(path), Sampling(frames=8))
    sampled = time.perf_counter() - started
    started = time.perf_counter()
    count = read_all_frames(str(path))
    every = time.perf_counter() - started
    return {"sampled_s": sampled, "sampled_frames": len(clip.frames), "every_s": every, "every_frames": count,
            "speedup": every / sampled}


def parquet_vs_folder(root: Path, encoder, per_class: int, seed: int) -> tuple[float, float, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    folder = root / "folder"
    records = []
    names = [f"{c}_{s}" for c, s in shapes.combinations("seen")]
    for name, (colour, shape) in zip(names, shapes.combinations("seen"), strict=True):
        (folder / name).mkdir(parents=True)
        for index in range(per_class):
            path = folder / name / f"{index}.png"
            shapes.render(shapes.sample_spec(rng, [(colour, shape)])).save(path)
            records.append({"image": {"bytes": path.read_bytes(), "path": path.name}, "label": names.index(name)})
    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64())], metadata={"huggingface": json.dumps({"info": {"features": features}})})
    (root / "hub" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records, schema=schema),
                   root / "hub" / "data" / "test-00000-of-00001.parquet", row_group_size=100)
    options = zsclip.RunOptions(precision="fp32", workers=2)
    from_folder = zsclip.evaluate(folder, encoder, ["photo"], options=options).metrics["photo"]["acc1"]
    from_parquet = zsclip.evaluate(root / "hub", encoder, ["photo"], options=options).metrics["photo"]["acc1"]
    return from_folder, from_parquet, len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=3)
    parser.add_argument("--hard", type=float, default=0.5)
    parser.add_argument("--hard-style", default="tiny", help='how hard frames are drawn ("tiny", "noise", ...)')
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    encoder = zsclip.load_model("demo")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        accuracy = per_video_accuracy(root, encoder, args.per_class, args.hard, args.seed, (1, 4, 8, 16),
                                      args.hard_style)
        count = args.per_class * len(shapes.combinations("seen"))
        print(f"(1) per-video acc1, {count} videos of 40 classes, 4 s at 8 fps, {args.hard:.0%} frames drawn "
              f"{args.hard_style}:")
        for frames, value in accuracy.items():
            what = "the middle frame" if frames == 1 else f"mean of {frames} frames"
            print(f"      {what:18s} {value:.1%}")
        precision, segments = segment_search(root, encoder, args.per_class, args.seed)
        print(f"(2) segment search: {segments} two-second segments of videos that change halfway, "
              f"R-precision over the classes = {precision:.1%}")
        speed = decode_speed(root)
        print(f"(3) decode: 8 sampled frames of a 60 s 256x256 video in {speed['sampled_s'] * 1000:.0f} ms vs every "
              f"frame ({speed['every_frames']}) in {speed['every_s'] * 1000:.0f} ms: {speed['speedup']:.1f}x faster")
        folder_acc, parquet_acc, images = parquet_vs_folder(root, encoder, args.per_class * 2, args.seed)
        same = "equal" if folder_acc == parquet_acc else "DIFFERENT"
        print(f"(4) {images} images: class folders acc1 {folder_acc:.2%}, HF Parquet split acc1 {parquet_acc:.2%} "
              f"({same})")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
