"""Video files as sampled frames, robustly: PyAV (FFmpeg in its wheel) seeks to each sample.

A video becomes *clips*: with ``frames=N`` one clip spanning the whole video, N frames sampled at
uniform times (the centres of N equal parts, the CLIP paper's protocol of averaging frame
embeddings); with ``segment=S`` one clip per S seconds, each sampled at ``frames`` uniform times
inside it. Only the sampled frames are decoded: the reader seeks to the keyframe before a sample
and decodes forward to it (or keeps decoding when the next sample is close), never the whole file.

Times count from the stream's own first timestamp and the duration is the stream's (a Matroska or
MPEG-TS stream may start at 10 s; a container's duration may count from 0). A sample takes the frame
on screen at its time, checked, not assumed: a seek can land past the sample (MPEG-TS has no index)
or between keyframes (a decoder fed a P-frame first shows grey or another scene), so decoding starts
at a keyframe packet, and a frame more than half a frame interval past its sample is refused: the reader
seeks further back, down to the stream's start, and reports the sample when no frame is near it.

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
#: The frame interval assumed for a stream without an average frame rate (how late a frame may be).
UNKNOWN_RATE_INTERVAL_S = 0.5
#: How late (in frame intervals) a frame may be after its sample: the nearest frame is at most half an interval
#: away; 5% more allows for timestamps rounded by the container (Matroska's milliseconds).
LATE_FRACTION = 0.55
#: Packets skipped after a seek while looking for a keyframe to start decoding at.
MAX_PACKETS_TO_KEYFRAME = 20_000


#: How a note row's text starts: the video was cut short (the file ends early, or --max-video-frames); its
#: other rows stand, so the CLI reports it as a note, not as a failed input.
NOTE = "note: "


def is_note(error: str | None) -> bool:
    """Whether a row's error text is a note about a video cut short (see ``NOTE``)."""
    return error is not None and error.startswith(NOTE)


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

    def record(self) -> dict:
        """The settings as a store's manifest keeps them (clips of other settings are other rows)."""
        return {"frames": self.frames, "segment": self.segment, "max_frames": self.max_frames}


def describe_sampling(record: dict) -> str:
    """A sampling record as the options that ask for it: ``--frames 8 --segment 2 --max-video-frames 256``."""
    segment = record.get("segment")
    return (f"--frames {record.get('frames')}" + (f" --segment {segment:g}" if segment is not None else "")
            + f" --max-video-frames {record.get('max_frames')}")


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
    #: the stream's first timestamp in seconds: sample times and spans count from it
    start: float = 0.0
    #: the duration the container's header gives when the data ends before it (a cut file), else None
    claimed: float | None = None

    @property
    def frame_interval(self) -> float:
        """Seconds between frames (from the average rate; a lenient bound when the stream gives none)."""
        return 1.0 / self.fps if self.fps else UNKNOWN_RATE_INTERVAL_S


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
        note = (f"{NOTE}video cut at {clips[-1].end:.1f} s of {duration:.1f} s: at most {sampling.max_frames} sampled "
                "frames per video (raise --max-video-frames or use a longer --segment)")
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
            if info.claimed is not None:
                note = _cut_note(info.duration, info.claimed)
            if probe:
                return clips, note, info
            if only is not None:
                note = note if only[1] >= len(clips) else None
                clips = clips[only[0] : only[1]]
            ended = _decode_samples(container, stream, clips, info)
            if ended is not None and ended < info.duration - info.frame_interval and clips:  # the data ends early
                if clips[0].start <= ended < clips[-1].end:  # (of a video's parts, the one holding the cut says so)
                    note = _cut_note(ended, info.duration)
                clips = [clip for clip in clips if clip.frames or clip.start < ended]
        except ImageReadError:
            raise
        except (av.FFmpegError, OSError, ValueError, MemoryError, OverflowError) as error:
            raise ImageReadError(f"cannot decode video: {_reason(error)}") from None
    if only is None and not any(clip.frames for clip in clips):  # a part's clips keep their own errors
        raise ImageReadError("no frame of this video could be decoded (truncated or corrupt)")
    return clips, note, info


def _cut_note(ended: float, duration: float) -> str:
    return (f"{NOTE}the data ends at {ended:.1f} s of the {duration:.1f} s the file says it lasts (a cut or truncated "
            "file): rows up to there")


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.split(": '")[0] if isinstance(text, str) else str(text)


def _info(container, stream) -> VideoInfo:
    """Start, duration, frame size and rate from the headers. The duration is the stream's; without
    one, the end is read from the last packets' times (a seek near the end, demuxing only), as the
    container's own figure may count from 0 rather than from the stream's start (Matroska's does);
    that figure is used only for a stream starting at 0, and a scan of the packets is the last resort."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise ImageReadError("the video stream has no frame size (damaged header)")
    fps = _frame_rate(stream)
    start = _start_seconds(container, stream)
    duration = None
    if stream.duration and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    claimed = None
    if duration is None or not (0 < duration < MAX_DURATION_S):
        end, data_end = _tail_end(container, stream, start, fps)
        duration = None if end is None else end - start
        header = container.duration / 1_000_000 if container.duration else None
        if data_end is not None and header is not None and data_end < header - 2 / (fps or 1 / UNKNOWN_RATE_INTERVAL_S):
            claimed = header  # counted from 0 or from the start, the header says the file goes on past its data
    if (duration is None or not (0 < duration < MAX_DURATION_S)) and container.duration and abs(start) < 1e-3:
        duration = container.duration / 1_000_000  # from 0: the container's figure means the same either way
    if duration is None or not (0 < duration < MAX_DURATION_S):
        container.seek(0)
        duration = _scanned_duration(container, stream, start)
    if not (0 < duration < MAX_DURATION_S):
        raise ImageReadError(f"the video's duration ({duration:g} s) is not usable")
    return VideoInfo(duration, width, height, fps, start, claimed)


def _frame_rate(stream) -> float | None:
    """Frames per second: the stream's average, else FFmpeg's guess (an MPEG-4 stream in MPEG-TS has
    no average rate); None when neither is a plausible rate."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and 0.01 <= float(rate) <= 1000:
            return float(rate)
    return None


def _start_seconds(container, stream) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / 1_000_000
    return 0.0


def _tail_end(container, stream, start: float, fps: float | None) -> tuple[float | None, float | None]:
    """(the end time of the video stream's last packet, of any stream's last packet), found by seeking to
    the container's end (whichever origin its duration counts from, start + duration is at or past the
    end) and demuxing what follows. The second says where the file's data ends (audio may outlast video)."""
    import av

    if container.duration is None or stream.time_base is None:
        return None, None
    past_end = start + container.duration / 1_000_000
    try:
        container.seek(max(0, int(past_end / stream.time_base)), stream=stream, backward=True, any_frame=False)
    except (av.FFmpegError, OSError, ValueError, OverflowError):
        return None, None
    video_end = data_end = None
    for count, packet in enumerate(container.demux()):
        if packet.pts is not None and packet.time_base is not None:
            interval = (1 / fps if fps else 0.0) if packet.stream is stream else 0.0
            length = float(packet.duration * packet.time_base) if packet.duration else interval
            end = float(packet.pts * packet.time_base) + length
            data_end = end if data_end is None else max(data_end, end)
            if packet.stream is stream:
                video_end = end if video_end is None else max(video_end, end)
        if count > 100_000:
            return None, None  # the seek did not get near the end: scan instead
    return video_end, data_end


def _scanned_duration(container, stream, start: float) -> float:
    last = 0.0
    for count, packet in enumerate(container.demux(stream)):
        if packet.pts is not None and packet.time_base is not None:
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base) - start
            last = max(last, end)
        if count > 2_000_000:
            break
    return last


class _NoFrameNear(Exception):
    """No frame of the stream is near a sample (the reason is the message)."""


class _Frames:
    """A video stream's frames in display order from a seek point, each decoded from a keyframe on.

    After a seek the demuxer may land past the asked time or between keyframes; packets before the
    first keyframe are dropped (a decoder fed a P-frame first shows grey or another scene), and
    ``sample`` checks each answer's time against the sample's."""

    def __init__(self, container, stream, info: VideoInfo) -> None:
        self.container, self.stream, self.info = container, stream, info
        self._frames: Iterator | None = None
        self.time = -math.inf  # the time of the last frame taken from ``_frames``
        self._last: tuple | None = None  # (frame, time) of the last answer
        self._end: tuple | None = None  # (last frame or None, its time) once the data has ended

    def seek(self, seconds: float) -> None:
        self.container.seek(max(0, int(seconds / self.stream.time_base)), stream=self.stream, backward=True,
                            any_frame=False)
        self._frames = self._decoded()
        self.time, self._last = -math.inf, None

    def data_end(self) -> float | None:
        """Seconds (from the stream's start) where the data ended before a sample, or None."""
        if self._end is None:
            return None
        frame, time = self._end
        return 0.0 if frame is None else time + self.info.frame_interval - self.info.start

    def reset(self) -> None:
        self._frames, self.time, self._last = None, -math.inf, None

    def _decoded(self) -> Iterator:
        started = False
        skipped = 0
        for packet in self.container.demux(self.stream):
            if not started:
                if packet.size and not packet.is_keyframe:
                    skipped += 1
                    if skipped > MAX_PACKETS_TO_KEYFRAME:
                        raise ValueError(f"no keyframe in {MAX_PACKETS_TO_KEYFRAME} packets after a seek")
                    continue
                started = True
            yield from packet.decode()

    def _advance(self, target: float):
        """(frame before ``target``, its time, the first frame at or after it, its time); the latter
        pair is (None, None) when the data ends first."""
        before, before_time = None, -math.inf
        for count, frame in enumerate(self._frames):
            time = _frame_time(frame, self.stream)
            if time is None:  # no timestamp: taken as the frame asked for
                return before, before_time, frame, target
            self.time = time
            if time >= target:
                return before, before_time, frame, time
            before, before_time = frame, time
            if count >= MAX_DECODE_PER_SAMPLE:
                raise ValueError(f"more than {MAX_DECODE_PER_SAMPLE} frames between keyframes before "
                                 f"{target - self.info.start:.2f} s")
        return before, before_time, None, None

    def sample(self, time: float):
        """(the frame on screen at ``time`` seconds of the stream, its time, whether the data reached it).

        Accepted: the first frame from half a frame interval before ``time`` if it is at most half a frame
        interval after it (the nearest frame; 5% more for rounded timestamps); else the frame before it (a
        gap in a variable-rate stream: that frame is shown). A seek that lands past ``time`` is retried
        from further back, at last from the file's start. When the data ends first: (the last frame or
        None, its time, False)."""
        interval = self.info.frame_interval
        target = time - interval / 2
        latest = time + interval * LATE_FRACTION  # the latest time the frame at ``time`` can have
        if self._end is not None and target > self._end[1]:  # the data is known to end before this sample
            return *self._end, self._end[1] + interval >= time
        if self._last is not None and target <= self._last[1] <= latest:  # samples closer than frames
            return *self._last, True
        if self._frames is None or not (self.time <= target <= self.time + CONTINUE_WITHIN_S):
            self.seek(target)
        back: float | None = 1.0
        while True:
            before, before_time, frame, frame_time = self._advance(target)
            if frame is not None and frame_time <= latest:
                self._last = (frame, frame_time)
                return frame, frame_time, True
            if before is not None:
                reached = frame is not None or before_time + interval >= time  # the last frame still shown
                if frame is None:
                    self._end = (before, before_time)
                self._last = (before, before_time)
                return before, before_time, reached
            if back is None:  # decoded from the file's start: no frame is nearer
                if frame is None:
                    self._end = (None, -math.inf)
                    return None, -math.inf, False
                self.reset()
                raise _NoFrameNear(f"no frame near {time - self.info.start:.2f} s (the first after it is at "
                                   f"{frame_time - self.info.start:.2f} s)")
            # the seek landed past the sample, or after the last keyframe before it: start further back
            if target - back > self.info.start:
                self.seek(target - back)
                back *= 2
            else:  # a timestamp seek can land anywhere near its time (MPEG-TS): read from the file's start
                self.container.seek(0)
                self._frames, self.time, back = self._decoded(), -math.inf, None


def _frame_time(frame, stream) -> float | None:
    if frame.time is not None:
        return float(frame.time)
    return float(frame.pts * stream.time_base) if frame.pts is not None else None


def _decode_samples(container, stream, clips: list[Clip], info: VideoInfo) -> float | None:
    """Fill each clip's frames: for every sample time, the frame on screen then (``_Frames.sample``).
    Returns where the data ends (seconds) when a sample lay past its end, else None."""
    import av

    reader = _Frames(container, stream, info)
    half_frame = info.frame_interval / 2
    for clip in clips:
        errors: list[str] = []
        taken: set[float] = set()  # a frame stands for one sample of a clip (a file cut short repeats none)
        for time in clip.times:
            try:
                frame, frame_time, reached = reader.sample(info.start + time)
            except _NoFrameNear as missing:
                errors.append(str(missing))
                continue
            except (av.FFmpegError, OSError, ValueError, MemoryError) as error:
                reader.reset()
                errors.append(_reason(error))
                continue
            if not reached:  # the data ended before this sample: seek again for the next one
                reader.reset()
                if (frame is None or frame_time < info.start + clip.start - 2 * half_frame
                        or frame_time in taken):
                    errors.append("past the end of the data")
                    continue
            taken.add(frame_time)
            check_size(frame.width, frame.height, None, MAX_PIXELS)
            clip.frames.append(_upright(frame))
        if not clip.frames:
            clip.error = f"no frame decoded in {clip.start:.2f}-{clip.end:.2f} s ({errors[-1] if errors else 'empty'})"
    return reader.data_end()


def _upright(frame) -> Image.Image:
    """The frame as shown: a phone's portrait video is stored sideways with a display rotation."""
    image = frame.to_image()
    rotation = getattr(frame, "rotation", 0) or 0
    return image.rotate(rotation, expand=True) if rotation % 360 else image


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


__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_FRAMES", "MAX_VIDEO_FRAMES", "NOTE", "Sampling", "describe_sampling", "Clip",
           "is_note",
           "VideoInfo", "plan_clips", "read_clips", "is_video_name", "looks_like_video", "read_all_frames"]
