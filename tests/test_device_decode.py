"""Device decoding (issue 17): JPEG bytes read in workers, decoded and preprocessed on the model's
device. Everything here runs on the CPU (torchvision decodes JPEGs there too), which exercises the
dispatch, the fallbacks and the tensor preprocessing; the CUDA run itself is guarded by a skip.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zsclip
from zsclip.data.images import decode_bytes, load_image
from zsclip.data.sources import expand_inputs
from zsclip.errors import InputError
from zsclip.pipeline.decode import DecodedBatches
from zsclip.pipeline.device_decode import JpegBytes, decode_on_device, device_preprocessing, oriented
from zsclip.pipeline.features import assemble_batch, feature_batches
from zsclip.tasks.classify import classify_items

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _photo(size=(640, 480), seed=0) -> Image.Image:
    """Smooth colour fields plus noise: decodes and resizes like a photo."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize(size, Image.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    """The examples as JPEGs (their true labels as names), plus files the device path must route."""
    folder = tmp_path_factory.mktemp("jpegs")
    for png in sorted(EXAMPLES.glob("*.png")):
        Image.open(png).convert("RGB").save(folder / f"{png.stem}.jpg", quality=95)
    Image.open(EXAMPLES / "red_triangle.png").convert("CMYK").save(folder / "cmyk_red_triangle.jpg")
    Image.open(EXAMPLES / "blue_ring.png").save(folder / "png_blue_ring.png")
    header = (folder / "black_cross.jpg").read_bytes()[:600]
    (folder / "zz_corrupt.jpg").write_bytes(header + b"\x00" * 2000)  # a valid header, garbage after it
    return folder


def test_the_tensor_preprocessing_matches_open_clips_pil_transform(demo):
    preprocessing = device_preprocessing(demo.image_transform())
    assert preprocessing is not None and preprocessing.size == demo.image_size
    for size in ((640, 480), (300, 900), (64, 64), (50, 40)):
        image = _photo(size)
        reference = demo.image_transform()(image)
        ours = preprocessing(torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous())
        assert ours.shape == reference.shape
        # antialiased bicubic in torch vs PIL: a few uint8 levels apart at most, on average far less
        assert (ours - reference).abs().mean() < 0.02 and (ours - reference).abs().max() < 0.25


def test_other_preprocessing_stays_on_the_cpu(tiny_clip):
    from torchvision import transforms as T

    assert device_preprocessing(tiny_clip.image_transform()) is not None  # open_clip's standard transform
    assert device_preprocessing(T.Compose([T.Resize(224), T.RandomCrop(224), T.ToTensor()])) is None
    assert device_preprocessing(lambda image: torch.zeros(3, 2, 2)) is None
    assert device_preprocessing(T.Compose([T.Resize((224, 300)), T.CenterCrop(224), T.ToTensor(),
                                           T.Normalize([0.5] * 3, [0.5] * 3)])) is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(orientation, tmp_path):
    image = _photo((96, 64), seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    image.save(path, quality=100, exif=exif)
    upright = np.asarray(load_image(path), dtype=np.int16)  # PIL path: exif_transpose
    from torchvision.io import decode_jpeg

    raw = decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8))
    ours = oriented(raw, orientation).permute(1, 2, 0).numpy().astype(np.int16)
    assert ours.shape == upright.shape and np.abs(ours - upright).mean() < 2.0


def test_workers_route_jpegs_as_bytes_and_decode_the_rest(demo, jpegs):
    sources = sorted(expand_inputs([str(jpegs)]), key=lambda s: s.name)
    dataset = DecodedBatches(sources, 64, demo.image_transform(), demo.image_size, device_decode=True)
    batch = dataset[0]
    kinds = dict(zip([Path(n).name for n in batch["names"]], batch["kinds"], strict=True))
    assert kinds["black_cross.jpg"] == "jpeg" and kinds["zz_corrupt.jpg"] == "jpeg"  # header is fine
    assert kinds["cmyk_red_triangle.jpg"] == "pixels" and kinds["png_blue_ring.png"] == "pixels"
    assert len(batch["jpegs"]) == batch["kinds"].count("jpeg") == len(batch["orientations"])


def test_a_jpeg_the_device_decoder_rejects_falls_back_then_errors(demo, jpegs):
    sources = sorted(expand_inputs([str(jpegs)]), key=lambda s: s.name)
    preprocessing = device_preprocessing(demo.image_transform())
    batch = DecodedBatches(sources, 64, demo.image_transform(), demo.image_size, device_decode=True)[0]
    fallbacks = []

    def fallback(data: bytes) -> torch.Tensor:
        fallbacks.append(len(data))
        return demo.image_transform()(decode_bytes(data))

    pixels = assemble_batch(batch, torch.device("cpu"), preprocessing, fallback)
    errors = dict(zip([Path(n).name for n in batch["names"]], batch["errors"], strict=True))
    assert errors["zz_corrupt.jpg"] is not None and "corrupt" in errors["zz_corrupt.jpg"]
    assert sum(error is None for error in errors.values()) == len(pixels) == len(sources) - 1
    assert fallbacks  # the rejected JPEG went through the PIL fallback before becoming an error row


def test_one_bad_jpeg_does_not_fail_the_batched_call(demo, jpegs):
    preprocessing = device_preprocessing(demo.image_transform())
    good = (jpegs / "black_cross.jpg").read_bytes()
    items = [JpegBytes(torch.frombuffer(bytearray(data), dtype=torch.uint8), 1)
             for data in (good, (jpegs / "zz_corrupt.jpg").read_bytes(), good)]

    def fallback(data: bytes) -> torch.Tensor:
        raise zsclip.ImageReadError("truncated or corrupt image")

    results = decode_on_device(items, torch.device("cpu"), preprocessing, fallback)
    assert isinstance(results[0], torch.Tensor) and isinstance(results[2], torch.Tensor)
    assert results[1] == "truncated or corrupt image" and torch.equal(results[0], results[2])


def test_device_decoding_gives_the_cpu_paths_answers(demo, jpegs):
    labels = [line for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line and line[0] != "#"]
    classifier = zsclip.ZeroShotClassifier.build(demo, labels, "photo", precision="fp32")
    sources = sorted(expand_inputs([str(jpegs)]), key=lambda s: s.name)
    runs = {}
    for mode in ("cpu", "device"):
        options = zsclip.RunOptions(decode=mode, workers=0, precision="fp32", batch_size=8)
        runs[mode] = list(classify_items(sources, classifier, demo, top_k=1, options=options))
    for cpu, device in zip(runs["cpu"], runs["device"], strict=True):
        assert cpu.source == device.source and (cpu.error is None) == (device.error is None)
        assert cpu.labels == device.labels  # same top-1 for every image
        if cpu.scores:
            assert abs(cpu.scores[0] - device.scores[0]) < 0.02
    def truth(source: str) -> str:
        stem = Path(source).stem
        return (stem.split("_", 1)[1] if stem.startswith(("cmyk_", "png_")) else stem).replace("_", " ")

    right = [p for p in runs["device"] if not p.error and truth(p.source) == p.labels[0]]
    assert len(right) == 12  # the ten examples and the CMYK and PNG copies are classified right


def test_decode_settings_are_validated(tiny_hf_clip_for_decode):
    with pytest.raises(InputError, match="decode 'gpu'"):
        zsclip.RunOptions(decode="gpu")
    options = zsclip.RunOptions(decode="device", workers=0)
    with pytest.raises(InputError, match="cannot be moved to the device"):
        next(feature_batches([zsclip.Source(str(EXAMPLES / "black_cross.png"))], tiny_hf_clip_for_decode, options))
    auto = zsclip.RunOptions(workers=0)  # auto on the CPU: the exact PIL path, whatever the model
    assert next(feature_batches([zsclip.Source(str(EXAMPLES / "black_cross.png"))], tiny_hf_clip_for_decode,
                                auto))[1] == [None]


@pytest.fixture(scope="module")
def tiny_hf_clip_for_decode(tmp_path_factory):
    from zsclip.testing.tiny_hf import save_tiny_clip

    return zsclip.load_model(f"transformers:{save_tiny_clip(tmp_path_factory.mktemp('hf'))}", device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_decoding_agrees_with_the_cpu_path(jpegs):
    encoder = zsclip.load_model("demo", device="cuda")
    classifier = zsclip.ZeroShotClassifier.build(encoder, ["red circle", "blue ring", "black cross"], "photo")
    sources = sorted(expand_inputs([str(jpegs)]), key=lambda s: s.name)
    on_gpu = list(classify_items(sources, classifier, encoder, top_k=1, options=zsclip.RunOptions(device="cuda")))
    on_cpu = list(classify_items(sources, classifier, encoder, top_k=1,
                                 options=zsclip.RunOptions(device="cuda", decode="cpu")))
    assert [p.labels for p in on_gpu] == [p.labels for p in on_cpu]
    assert [p.error is None for p in on_gpu] == [p.error is None for p in on_cpu]


def test_shards_decode_on_the_device_with_the_same_metrics(demo, jpegs, tmp_path):
    import tarfile

    labels = [line for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line and line[0] != "#"]
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as archive:
        for index, path in enumerate(sorted(jpegs.glob("*"))):
            stem = path.stem.split("_", 1)[1] if path.stem.startswith(("cmyk_", "png_")) else path.stem
            archive.add(path, arcname=f"{index:04d}{path.suffix}")
            label = stem.replace("_", " ").encode()
            info = tarfile.TarInfo(f"{index:04d}.txt")
            info.size = len(label)
            archive.addfile(info, io.BytesIO(label))
    collection = zsclip.data.shards.webdataset(str(shard), labels)
    results = {mode: zsclip.evaluate(collection, demo, "photo", options=zsclip.RunOptions(decode=mode, workers=0,
                                                                                             precision="fp32"))
               for mode in ("cpu", "device")}
    assert results["device"].metrics["photo"]["acc1"] == results["cpu"].metrics["photo"]["acc1"] == 1.0
    assert results["device"].num_images == results["cpu"].num_images == 12
    assert [f["error"] for f in results["device"].failures] and len(results["device"].failures) == 1
