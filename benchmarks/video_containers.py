"""Are the sampled frames the frames at the sampled times, in every container? (needs PyAV)

    python benchmarks/video_containers.py            # a few seconds
    PYTHONPATH=/path/to/other/zsclip/src python benchmarks/video_containers.py   # another version

Each video is 10 s at 8 fps, keyframes 5 s apart, written by PyAV with its first frame at 0 s and at 10 s;
every frame shows its own number as 8 black / white blocks (any codec keeps them), so a decoded frame
says which it is. For three samplings (8 frames of the whole video; 3 and 12 frames per 1 s segment) it
counts the clips planned (10 segments are right), the samples with no frame, and the samples whose frame
is not a nearest frame to the sample time (|number - 8 t| > 0.5; a later segment's or a grey frame).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from tempfile import TemporaryDirectory

from PIL import Image

from zsclip.data.video import Sampling, read_clips

FPS, SECONDS = 8, 10
CONTAINERS = [("mp4", "libx264", None), ("ts", "libx264", "mpegts"), ("ts", "mpeg4", "mpegts"),
              ("mkv", "libx264", None), ("webm", "libvpx", None), ("webm", "libvpx-vp9", None)]
SAMPLINGS = [Sampling(frames=8), Sampling(frames=3, segment=1.0), Sampling(frames=12, segment=1.0)]


def numbered(index: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    for bit in range(8):
        image.paste((255, 255, 255) if index >> bit & 1 else (0, 0, 0), (bit * 8, 0, bit * 8 + 8, 16))
    return image


def number_of(image: Image.Image) -> int:
    grey = image.convert("L")
    return sum(1 << bit for bit in range(8) if grey.crop((bit * 8 + 2, 2, bit * 8 + 6, 14)).getextrema()[0] > 128)


def nearest(number: int, time: float) -> bool:
    """Whether frame ``number`` is a nearest frame to ``time`` (the last frame for a time past it)."""
    last = SECONDS * FPS - 1
    return abs(number - time * FPS) <= 0.5 or (time * FPS > last and number == last)


def write(path: Path, codec: str, container_format: str | None, start_s: float) -> Path:
    import av

    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.gop_size = 5 * FPS
        stream.codec_context.bit_rate = 2_000_000
        for index in range(SECONDS * FPS):
            frame = av.VideoFrame.from_image(numbered(index))
            frame.pts, frame.time_base = index + round(start_s * FPS), Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main() -> None:
    import av

    print("| container | codec | start | clips (whole; 1 s segments) | samples | no frame | wrong frame |")
    print("|---|---|---|---|---|---|---|")
    with TemporaryDirectory() as folder:
        for extension, codec, container_format in CONTAINERS:
            if codec not in av.codecs_available:
                continue
            for start in (0.0, 10.0):
                path = write(Path(folder) / f"v.{extension}", codec, container_format, start)
                counts, samples, missing, wrong = [], 0, 0, 0
                for sampling in SAMPLINGS:
                    clips = read_clips(str(path), sampling)[0]
                    counts.append(len(clips))
                    for clip in clips:
                        samples += len(clip.times)
                        missing += len(clip.times) - len(clip.frames)
                        if len(clip.frames) == len(clip.times):
                            wrong += sum(not nearest(number_of(f), t) for f, t in zip(clip.frames, clip.times,
                                                                                      strict=True))
                print(f"| {extension} | {codec} | {start:g} s | {counts[0]}; {counts[1]} | {samples} | {missing} | "
                      f"{wrong} |")


if __name__ == "__main__":
    main()
