"""Video files as sampled frames, robustly: PyAV (FFmpeg in its wheel) seeks to each sample.

A video becomes *clips*: with ``frames=N`` one clip spanning the whole video, N frames sampled at
uniform times (the centres of N equal parts, the CLIP paper's protocol of averaging frame
embeddings); with ``segment=S`` one clip per S seconds, each sampled at ``frames`` uniform times
inside it. Only the sampled frames are decoded: the reader seeks to the keyframe before a sample
and decodes forward to it (or keeps decoding when the next sample is close), never the whole file.

Frames are turned upright by the stream's display rotation (a phone's portrait video is stored
sideways), as images are by their EXIF orientation.

Every failure is an ``ImageReadError`` with a short reason (empty, not a video, no video stream,
frames too large, no frame decodable); a sample that cannot be decoded (a corrupt packet, a file
cut short) costs only itself: the clip keeps the frames that decoded, and a clip with none gets its
own error. Work is bounded: at most ``max_frames`` samples per video (a longer video is cut there,
with a note), at most ``MAX_DECODE_PER_SAMPLE`` frames decoded to reach one sample, and frame sizes
are checked against the pixel limit from the stream header before anything is decoded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image

from ..errors import ImageReadError
from .images import MAX_PIXELS, check_size, file_errors

#: File extensions read as videos (folders and globs pick them up beside images).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
                              ".mts", ".wmv", ".flv", ".3gp", ".ogv", ".vob"})
#: Frames per video by default: 8 uniform samples, the usual clip of CLIP-based video recognition (ActionCLIP's
#: and X-CLIP's 8-frame models); benchmarks/video_demo.py measures it against 1, 4 and 16.
DEFAULT_FRAMES = 8
#: Sampled frames per video at most (segments past this are cut, with a note row).
MAX_VIDEO_FRAMES = 256
#: Frames decoded after a seek to reach one sample before giving up on it (keyframes too far apart).
MAX_DECODE_PER_SAMPLE = 2000
#: When the next sample is at most this many seconds ahead, decode on instead of seeking.
CONTINUE_WITHIN_S = 1.0
#: A video that says it lasts longer than this (30 days) is treated as damaged.
MAX_DURATION_S = 30 * 24 * 3600.0


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def looks_like_video(head: bytes) -> bool:
    """Whether a file's first bytes are a video container (a video with an image's extension)."""
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide") or head[:4] == b"\x1aE\xdf\xa3"
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[:4] in (b"\x00\x00\x01\xba", b"FLV\x01")
            or head[:4] == b"OggS" or head[:1] == b"G" and len(head) > 188 and head[188:189] == b"G")


@dataclass(frozen=True)
class Sampling:
    """How a video becomes clips: ``frames`` per clip; ``segment`` seconds per clip (None = one clip
    for the whole video); ``max_frames`` samples per video at most."""

    frames: int = DEFAULT_FRAMES
    segment: float | None = None
    max_frames: int = MAX_VIDEO_FRAMES

    def __post_init__(self) -> None:
        if not isinstance(self.frames, int) or self.frames < 1:
            raise ValueError(f"frames {self.frames!r} must be a whole number >= 1")
        if self.segment is not None and not (0 < self.segment < float("inf")):
            raise ValueError(f"segment {self.segment!r} must be a number of seconds > 0")
        if not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ValueError(f"max video frames {self.max_frames!r} must be a whole number >= 1")


@dataclass
class Clip:
    """A time span of a video and the times sampled in it; ``frames`` are filled by decoding."""

    start: float
    end: float
    times: list[float]
    frames: list[Image.Image] = field(default_factory=list)
    error: str | None = None


@dataclass
class VideoInfo:
    duration: float
    width: int
    height: int
    fps: float | None


def plan_clips(duration: float, sampling: Sampling) -> tuple[list[Clip], str | None]:
    """The clips of a ``duration``-second video and, when ``max_frames`` cut it short, a note saying where."""
    if sampling.segment is None:
        count = min(sampling.frames, sampling.max_frames)
        return [Clip(0.0, duration, _uniform(0.0, duration, count))], None
    segments = max(1, math.ceil(duration / sampling.segment - 1e-9))
    per = min(sampling.frames, sampling.max_frames)
    allowed = max(1, sampling.max_frames // per)
    clips = []
    for index in range(min(segments, allowed)):
        start = index * sampling.segment
        end = min(duration, start + sampling.segment)
        clips.append(Clip(round(start, 6), round(end, 6), _uniform(start, end, per)))
    note = None
    if segments > allowed:
        note = (f"video cut at {clips[-1].end:.1f} s of {duration:.1f} s: at most {sampling.max_frames} sampled frames "
                "per video (raise --max-video-frames or use a longer --segment)")
    return clips, note


def _uniform(start: float, end: float, count: int) -> list[float]:
    """The centres of ``count`` equal parts of [start, end]."""
    step = (end - start) / count
    return [start + step * (i + 0.5) for i in range(count)]


def read_clips(source, sampling: Sampling, max_pixels: int = MAX_PIXELS, target_size: int | None = None, *,
               max_seconds: float | None = None, only: tuple[int, int] | None = None,
               probe: bool = False) -> tuple[list[Clip], str | None, VideoInfo]:
    """Decode the sampled frames of the video at ``source`` (a path or a binary file object).

    Returns (clips with their frames or errors, a note when the video was cut short, info).
    ``only=(first, stop)``: decode clips ``first`` to ``stop - 1`` alone (a part of a video, e.g. one Ray
    task's; the note comes with the part holding the last clip). ``probe``: plan the clips, decode nothing.
    Raises ImageReadError when the file is not a readable video at all, or lasts over ``max_seconds``."""
    try:
        import av
    except ImportError:
        raise ImageReadError('videos need PyAV: pip install "zsclip[video]"') from None

    if isinstance(source, (str, os.PathLike)):
        with file_errors("a video file"):
            if os.path.getsize(source) == 0:
                raise ImageReadError("empty file")
    try:
        container = av.open(os.fspath(source) if isinstance(source, (str, os.PathLike)) else source, mode="r",
                            metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as error:
        raise ImageReadError(f"not a video, or a format FFmpeg cannot read ({_reason(error)})") from None
    with container:
        try:
            stream = next((s for s in container.streams.video), None)
            if stream is None:
                raise ImageReadError("no video stream in this file")
            stream.thread_type = "AUTO"
            info = _info(container, stream)
            check_size(info.width, info.height, target_size, max_pixels)
            if max_seconds is not None and info.duration > max_seconds:
                raise ImageReadError(f"the video lasts {info.duration:.1f} s, over the limit of {max_seconds:g} s")
            clips, note = plan_clips(info.duration, sampling)
            if probe:
                return clips, note, info
            if only is not None:
                note = note if only[1] >= len(clips) else None
                clips = clips[only[0] : only[1]]
            _decode_samples(container, stream, clips, info)
        except ImageReadError:
            raise
        except (av.FFmpegError, OSError, ValueError, MemoryError, OverflowError) as error:
            raise ImageReadError(f"cannot decode video: {_reason(error)}") from None
    if only is None and not any(clip.frames for clip in clips):  # a part's clips keep their own errors
        raise ImageReadError("no frame of this video could be decoded (truncated or corrupt)")
    return clips, note, info


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.split(": '")[0] if isinstance(text, str) else str(text)


def _info(container, stream) -> VideoInfo:
    """Duration, frame size and rate from the headers; a duration the headers do not give is read
    from the last packet's time (demuxing only, no decoding)."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise ImageReadError("the video stream has no frame size (damaged header)")
    fps = float(stream.average_rate) if stream.average_rate else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    if duration is None or not (0 < duration < MAX_DURATION_S):
        duration = _scanned_duration(container, stream, start)
        container.seek(0)
    if not (0 < duration < MAX_DURATION_S):
        raise ImageReadError(f"the video's duration ({duration:g} s) is not usable")
    return VideoInfo(duration, width, height, fps)


def _scanned_duration(container, stream, start: float) -> float:
    last = 0.0
    for count, packet in enumerate(container.demux(stream)):
        if packet.pts is not None and packet.time_base is not None:
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base) - start
            last = max(last, end)
        if count > 2_000_000:
            break
    return last


def _decode_samples(container, stream, clips: list[Clip], info: VideoInfo) -> None:
    """Fill each clip's frames: for every sample time, the first frame shown at or after it."""
    import av

    start_offset = (float(stream.start_time * stream.time_base)
                    if stream.start_time is not None and stream.time_base is not None else 0.0)
    half_frame = 0.5 / info.fps if info.fps else 0.0
    frames: Iterator | None = None
    last_time = -math.inf
    for clip in clips:
        errors: list[str] = []
        taken: set[float] = set()  # a frame stands for one sample of a clip (a file cut short repeats none)
        for time in clip.times:
            target = start_offset + time - half_frame
            try:
                if frames is None or not (last_time <= target <= last_time + CONTINUE_WITHIN_S):
                    container.seek(max(0, int(target / stream.time_base)), stream=stream, backward=True,
                                   any_frame=False)
                    frames = container.decode(stream)
                frame, last_time, reached = _first_at(frames, target, stream)
            except (av.FFmpegError, OSError, ValueError, StopIteration, MemoryError) as error:
                frames, last_time = None, -math.inf
                errors.append(_reason(error) if not isinstance(error, StopIteration) else "past the end of the data")
                continue
            if not reached:  # the data ended before this sample: seek again for the next one
                frames = None
                if frame is None or last_time < start_offset + clip.start - 2 * half_frame or last_time in taken:
                    errors.append("past the end of the data")
                    continue
            taken.add(last_time)
            check_size(frame.width, frame.height, None, MAX_PIXELS)
            clip.frames.append(_upright(frame))
        if not clip.frames:
            clip.error = f"no frame decoded in {clip.start:.2f}-{clip.end:.2f} s ({errors[-1] if errors else 'empty'})"


def _upright(frame) -> Image.Image:
    """The frame as shown: a phone's portrait video is stored sideways with a display rotation."""
    image = frame.to_image()
    rotation = getattr(frame, "rotation", 0) or 0
    return image.rotate(rotation, expand=True) if rotation % 360 else image


def _first_at(frames: Iterator, target: float, stream):
    """(frame, its time, True) for the first decoded frame at or after ``target`` seconds, or
    (the last frame and its time, or None and -inf, False) when the data ends first."""
    last, last_time = None, -math.inf
    for count, frame in enumerate(frames):
        time = frame.time if frame.time is not None else (
            float(frame.pts * stream.time_base) if frame.pts is not None else None)
        if time is None or time >= target:
            return frame, (time if time is not None else target), True
        last, last_time = frame, time
        if count >= MAX_DECODE_PER_SAMPLE:
            raise ValueError(f"more than {MAX_DECODE_PER_SAMPLE} frames between keyframes before {target:.2f} s")
    return last, last_time, False


def read_all_frames(path: str, limit: int | None = None) -> int:
    """Decode every frame of a video (the baseline that sampling is measured against); returns the count."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        for frame in container.decode(stream):
            frame.to_image()
            count += 1
            if limit is not None and count >= limit:
                break
    return count


__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_FRAMES", "MAX_VIDEO_FRAMES", "Sampling", "Clip", "VideoInfo", "plan_clips",
           "read_clips", "is_video_name", "looks_like_video", "read_all_frames"]
