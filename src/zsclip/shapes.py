"""The synthetic world of the bundled demo model: coloured shapes on plain backgrounds.

The demo model (``--model demo``) was trained only on images drawn here, so this module is how
users and tests make images it can classify: ``render`` one image, ``sample_specs`` random ones,
``write_dataset`` a labelled folder that ``zsclip eval`` reads. Some colour-shape combinations
(``HELD_OUT``) never appeared in training; classifying them is true zero-shot.

``STYLES`` are distribution shifts the model never saw (outlined shapes, textured backgrounds,
pixel noise, tiny shapes), combinable with "+" ("outline+noise"): they make the few-shot
adaptation task (``zsclip adapt``) and the shifted test set its robustness is measured on.
The default style "plain" draws exactly what the model was trained on.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw

#: Palette: each colour's nominal RGB (rendered with a little jitter so no colour is one exact value).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "green": (30, 150, 45),
    "blue": (25, 60, 215),
    "yellow": (245, 220, 25),
    "purple": (125, 40, 165),
    "orange": (245, 135, 15),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")

#: Combinations kept out of training entirely: every colour once and every shape at least once,
#: so each word was learned elsewhere and only the pairing is new.
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "triangle"), ("green", "star"), ("blue", "ring"), ("yellow", "cross"),
    ("purple", "circle"), ("orange", "square"), ("white", "star"), ("black", "triangle"),
)

Split = Literal["all", "seen", "held-out"]
LabelKind = Literal["both", "colour", "shape"]
Style = str  # "plain", one of STYLES, or several joined by "+"
#: Distribution shifts; "plain" is the training distribution.
STYLES: tuple[str, ...] = ("plain", "outline", "texture", "noise", "tiny")
NOISE_SIGMA = 40.0  # per-pixel Gaussian noise of style "noise", in RGB levels
TINY_SCALE = 0.45  # radius factor of style "tiny"
OUTLINE_WIDTH = 0.06  # stroke width of style "outline", relative to the side
COLOUR_JITTER = 18  # +- per RGB channel
CROSS_ARM = 0.36  # half a cross's arm width, relative to its arm length


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that decides one image. Geometry is relative to the image side, so a spec renders
    the same scene at any size."""

    colour: str  # a palette name, or "#rrggbb" for an unnamed colour (training shows shapes in those too)
    shape: str
    background: str
    radius: float  # of the shape's bounding circle, as a fraction of the side
    centre: tuple[float, float]  # fractions of the side
    rotation: float  # degrees
    tint: tuple[int, int, int] = (0, 0, 0)  # colour jitter of the shape
    background_tint: tuple[int, int, int] = (0, 0, 0)

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def combinations(split: Split = "all") -> list[tuple[str, str]]:
    """Colour-shape pairs: all 48, the 40 seen in training, or the 8 held out."""
    pairs = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    if split == "all":
        return pairs
    if split == "seen":
        return [pair for pair in pairs if pair not in HELD_OUT]
    if split == "held-out":
        return list(HELD_OUT)
    raise ValueError(f"unknown split {split!r}: use all, seen or held-out")


def classnames(kind: LabelKind = "both") -> list[str]:
    """Class names of one labelling: "red star" (48), "red" (8) or "star" (6)."""
    if kind == "both":
        return [f"{colour} {shape}" for colour, shape in combinations("all")]
    if kind == "colour":
        return list(COLOURS)
    if kind == "shape":
        return list(SHAPES)
    raise ValueError(f"unknown label kind {kind!r}: use both, colour or shape")


def label_of(spec: ShapeSpec, kind: LabelKind = "both") -> str:
    return {"both": spec.label, "colour": spec.colour, "shape": spec.shape}[kind]


def sample_spec(rng: random.Random, pairs: Sequence[tuple[str, str]] | None = None) -> ShapeSpec:
    """A random scene: a pair from ``pairs`` (default: the seen ones), random size, position,
    rotation and a background colour different from the shape's."""
    colour, shape = rng.choice(list(pairs) if pairs is not None else combinations("seen"))
    background = rng.choice([c for c in COLOURS if c != colour])
    radius = rng.uniform(0.2, 0.42)
    centre = (rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius))
    jitter = [rng.randint(-COLOUR_JITTER, COLOUR_JITTER) for _ in range(6)]
    return ShapeSpec(colour, shape, background, radius, centre, rng.uniform(0, 360),
                     tuple(jitter[:3]), tuple(jitter[3:]))


def sample_specs(count: int, seed: int, split: Split = "seen") -> list[ShapeSpec]:
    """``count`` random scenes from one split, reproducible from ``seed``."""
    rng = random.Random(seed)
    pairs = combinations(split)
    return [sample_spec(rng, pairs) for _ in range(count)]


def _rgb(name: str, tint: tuple[int, int, int]) -> tuple[int, int, int]:
    if name in COLOURS:
        base = COLOURS[name]
    elif len(name) == 7 and name.startswith("#"):
        base = tuple(int(name[i:i + 2], 16) for i in (1, 3, 5))
    else:
        raise ValueError(f"unknown colour {name!r}: use one of {', '.join(COLOURS)} or '#rrggbb'")
    return tuple(min(255, max(0, value + delta)) for value, delta in zip(base, tint, strict=True))


def unnamed_colour(rng: random.Random, min_distance: float = 110.0) -> str:
    """A random "#rrggbb" far from every palette colour: no one would call it red, blue, ..."""
    while True:
        rgb = tuple(rng.randint(0, 255) for _ in range(3))
        if all(math.dist(rgb, named) >= min_distance for named in COLOURS.values()):
            return "#{:02x}{:02x}{:02x}".format(*rgb)


def _star(cx: float, cy: float, r: float, rotation: float, points: int = 5) -> list[tuple[float, float]]:
    corners = []
    for k in range(points * 2):
        radius = r if k % 2 == 0 else r * 0.42
        angle = math.radians(rotation) + k * math.pi / points
        corners.append((cx + radius * math.sin(angle), cy - radius * math.cos(angle)))
    return corners


def _cross(cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    arm = r * CROSS_ARM
    outline = [(arm, r), (arm, arm), (r, arm), (r, -arm), (arm, -arm), (arm, -r),
               (-arm, -r), (-arm, -arm), (-r, -arm), (-r, arm), (-arm, arm), (-arm, r)]
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in outline]


def parse_style(style: Style) -> frozenset[str]:
    """The set of shifts named by ``style`` ("plain" is the empty set); unknown names are refused."""
    parts = frozenset(part.strip() for part in str(style).split("+")) - {"plain"}
    unknown = sorted(part for part in parts if part not in STYLES)
    if unknown or not str(style).strip():
        raise ValueError(f"unknown style {style!r}: use {', '.join(STYLES)}, or several joined by '+' "
                         "(e.g. 'outline+noise')")
    return parts


def render(spec: ShapeSpec, size: int = 64, supersample: int = 4, *, style: Style = "plain") -> Image.Image:
    """Draw ``spec`` as a ``size`` x ``size`` RGB image (drawn larger, then downsampled, for smooth edges).

    ``style`` adds distribution shifts (see ``STYLES``); any randomness they need (noise, texture
    phase) is seeded from the spec, so a spec and style always give the same image.
    """
    shifts = parse_style(style)
    if not shifts:
        return _render_plain(spec, size, supersample)
    if "tiny" in shifts:
        spec = replace(spec, radius=spec.radius * TINY_SCALE)
    side = size * supersample
    background = _rgb(spec.background, spec.background_tint)
    colour = _rgb(spec.colour, spec.tint)
    rng = random.Random(_style_seed(spec))
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    if "texture" in shifts:
        _stripes(draw, side, background, rng)
    cx, cy, r = spec.centre[0] * side, spec.centre[1] * side, spec.radius * side
    if "outline" in shifts:
        _draw_outline(draw, spec, cx, cy, r, colour, max(1, round(OUTLINE_WIDTH * side)))
    else:
        _draw_filled(draw, spec, cx, cy, r, colour, background)
    image = image.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else image
    if "noise" in shifts:
        import numpy as np

        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, NOISE_SIGMA, (size, size, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).round().astype(np.uint8))
    return image


def _render_plain(spec: ShapeSpec, size: int, supersample: int) -> Image.Image:
    """The training distribution, drawn exactly as the demo model saw it."""
    side = size * supersample
    background = _rgb(spec.background, spec.background_tint)
    colour = _rgb(spec.colour, spec.tint)
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    cx, cy, r = spec.centre[0] * side, spec.centre[1] * side, spec.radius * side
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif spec.shape == "ring":  # its hole shows the background
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        inner = r * 0.6
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=background)
    elif spec.shape == "square":
        draw.regular_polygon((cx, cy, r), 4, rotation=spec.rotation, fill=colour)
    elif spec.shape == "triangle":
        draw.regular_polygon((cx, cy, r), 3, rotation=spec.rotation, fill=colour)
    elif spec.shape == "star":
        draw.polygon(_star(cx, cy, r, spec.rotation), fill=colour)
    elif spec.shape == "cross":
        # corners at 0.95 * hypot(1, CROSS_ARM) = 1.01 r: a hair past the bounding circle, kept as the
        # demo model was trained on it
        draw.polygon(_cross(cx, cy, r * 0.95, spec.rotation), fill=colour)
    else:
        raise ValueError(f"unknown shape {spec.shape!r}: use one of {', '.join(SHAPES)}")
    return image.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else image


def _style_seed(spec: ShapeSpec) -> int:
    """A seed from the spec's content (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(spec).encode()).digest()[:8], "big")


def _stripes(draw: ImageDraw.ImageDraw, side: int, background: tuple[int, int, int], rng: random.Random) -> None:
    """Diagonal stripes of a lighter or darker shade of the background, at a random angle and pitch."""
    shade = tuple(int(v * 0.55) if sum(background) > 380 else int(v + (255 - v) * 0.45) for v in background)
    angle = math.radians(rng.uniform(0, 180))
    pitch = side * rng.uniform(0.08, 0.16)
    dx, dy = math.cos(angle), math.sin(angle)  # along the stripes
    nx, ny = -dy, dx  # across them
    half = side * 1.5
    offset = -half + rng.uniform(0, pitch)
    while offset < half:
        cx, cy = side / 2 + nx * offset, side / 2 + ny * offset
        draw.line((cx - dx * half, cy - dy * half, cx + dx * half, cy + dy * half), fill=shade,
                  width=max(1, round(pitch / 2)))
        offset += pitch


def _draw_filled(draw, spec: ShapeSpec, cx: float, cy: float, r: float, colour, background) -> None:
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif spec.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        inner = r * 0.6
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=background)
    else:
        _polygon(draw, spec, cx, cy, r, fill=colour)


def _draw_outline(draw, spec: ShapeSpec, cx: float, cy: float, r: float, colour, width: int) -> None:
    if spec.shape in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=width)
        if spec.shape == "ring":
            inner = r * 0.6
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), outline=colour, width=width)
    else:
        _polygon(draw, spec, cx, cy, r, outline=colour, width=width)


def _polygon(draw, spec: ShapeSpec, cx: float, cy: float, r: float, **paint) -> None:
    """A polygonal shape with the plain renderer's geometry; ``paint`` is fill= or outline= and width=."""
    if spec.shape == "square":
        draw.regular_polygon((cx, cy, r), 4, rotation=spec.rotation, **paint)
    elif spec.shape == "triangle":
        draw.regular_polygon((cx, cy, r), 3, rotation=spec.rotation, **paint)
    elif spec.shape == "star":
        draw.polygon(_star(cx, cy, r, spec.rotation), **paint)
    elif spec.shape == "cross":
        draw.polygon(_cross(cx, cy, r * 0.95, spec.rotation), **paint)
    else:
        raise ValueError(f"unknown shape {spec.shape!r}: use one of {', '.join(SHAPES)}")


def write_dataset(
    out_dir: str | Path,
    per_class: int,
    seed: int,
    split: Split = "all",
    label: LabelKind = "both",
    size: int = 64,
    *,
    style: Style = "plain",
) -> Path:
    """Write ``per_class`` images of every colour-shape pair in ``split`` as PNGs, plus
    ``manifest.csv`` (path,label) and ``labels.txt`` (every class of the ``label`` kind, all 48,
    8 or 6 of them, so held-out images are scored against the full label set).

    ``style`` draws every image in that style (``STYLES``); the scenes (pairs, sizes, places) are
    the same for every style at one seed, so only the style differs between two sets.

    Returns the manifest's path: ``zsclip eval --data DIR/manifest.csv --labels-file DIR/labels.txt``.
    """
    parse_style(style)  # refuse an unknown style before writing anything
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for colour, shape in combinations(split):
        for index in range(per_class):
            spec = sample_spec(rng, [(colour, shape)])
            name = f"images/{colour}_{shape}_{index:04d}.png"
            render(spec, size, style=style).save(out / name)
            rows.append((name, label_of(spec, label)))
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    (out / "labels.txt").write_text("\n".join(classnames(label)) + "\n")
    return manifest


# --- scenes of several shapes: the multi-label and retrieval world -----------------------------------

@dataclass(frozen=True)
class Scene:
    """Two or three shapes of distinct colour-shape pairs on one background, not overlapping."""

    shapes: tuple[ShapeSpec, ...]
    background: str

    @property
    def labels(self) -> list[str]:
        return [spec.label for spec in self.shapes]

    def captions(self, count: int = 2) -> list[str]:
        """Captions naming every shape ("a red star and a blue ring"), in ``count`` different orders."""
        names = [f"a {spec.label}" for spec in self.shapes]
        orders = [names, names[::-1], names[1:] + names[:1]]
        seen: list[str] = []
        for order in orders:
            text = " and ".join(order) if len(order) < 3 else f"{', '.join(order[:-1])} and {order[-1]}"
            if text not in seen:
                seen.append(text)
        return seen[:count]


def sample_scene(rng: random.Random, count: int | None = None, pairs: Sequence[tuple[str, str]] | None = None
                 ) -> Scene:
    """A random scene of ``count`` (default 2 or 3) shapes with distinct colour-shape pairs, distinct
    colours, none the background's, placed without overlapping (rejection sampling of centres)."""
    count = count or rng.choice((2, 3))
    pool = list(pairs) if pairs is not None else combinations("seen")
    chosen: list[tuple[str, str]] = []
    while len(chosen) < count:
        pair = rng.choice(pool)
        if all(pair[0] != c for c, _ in chosen):
            chosen.append(pair)
    background = rng.choice([c for c in COLOURS if c not in {colour for colour, _ in chosen}])
    shapes: list[ShapeSpec] = []
    for colour, shape in chosen:
        radius = rng.uniform(0.15, 0.2) if count == 3 else rng.uniform(0.17, 0.24)
        for _ in range(200):
            centre = (rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius))
            if all(math.dist(centre, other.centre) > (radius + other.radius) * 1.05 for other in shapes):
                break
        jitter = [rng.randint(-COLOUR_JITTER, COLOUR_JITTER) for _ in range(6)]
        shapes.append(ShapeSpec(colour, shape, background, radius, centre, rng.uniform(0, 360), tuple(jitter[:3]),
                                tuple(jitter[3:])))
    return Scene(tuple(shapes), background)


def render_scene(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw every shape of ``scene`` on its background, as ``render`` draws one."""
    side = size * supersample
    background = _rgb(scene.background, scene.shapes[0].background_tint)
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    for spec in scene.shapes:
        _draw_filled(draw, spec, spec.centre[0] * side, spec.centre[1] * side, spec.radius * side,
                     _rgb(spec.colour, spec.tint), background)
    return image.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else image


def write_scenes(out_dir: str | Path, count: int, seed: int, size: int = 64, captions: int = 2) -> Path:
    """Write ``count`` scenes as PNGs plus ``manifest.csv`` (path,labels with ';'), ``labels.jsonl``
    (the same as JSONL lists), ``captions.csv`` (path,caption; ``captions`` per image) and ``labels.txt``
    (all 48 colour-shape labels). Returns the manifest's path:
    ``zsclip eval --data DIR/manifest.csv --labels-file DIR/labels.txt --multi-label``."""
    import json

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows, caption_rows = [], []
    for index in range(count):
        scene = sample_scene(rng)
        name = f"images/scene_{index:05d}.png"
        render_scene(scene, size).save(out / name)
        rows.append((name, scene.labels))
        caption_rows += [(name, caption) for caption in scene.captions(captions)]
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "labels"])
        writer.writerows((name, ";".join(labels)) for name, labels in rows)
    (out / "labels.jsonl").write_text("".join(json.dumps({"path": name, "labels": labels}) + "\n"
                                              for name, labels in rows))
    with (out / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        writer.writerows(caption_rows)
    (out / "labels.txt").write_text("\n".join(classnames("both")) + "\n")
    return manifest


def video_frames(spec: ShapeSpec, seconds: float = 4.0, fps: int = 8, size: int = 64, *,
                 change_to: ShapeSpec | None = None, hard: float = 0.0, hard_style: Style = "tiny",
                 seed: int = 0) -> list[Image.Image]:
    """The frames of a moving-shape video: ``spec``'s shape glides across the frame and turns; with
    ``change_to`` the scene becomes that spec halfway (so the answer depends on *when*). ``hard``: the
    fraction of frames drawn in ``hard_style``, a shift the model never saw (default "tiny": a far shot)."""
    rng = random.Random(seed)
    count = max(1, round(seconds * fps))
    frames = []
    for index in range(count):
        current = change_to if change_to is not None and index >= count / 2 else spec
        phase = index / max(1, count - 1)
        dx = 0.12 * math.sin(2 * math.pi * phase)
        centre = (min(0.8, max(0.2, current.centre[0] + dx)), current.centre[1])
        moved = replace(current, centre=centre, rotation=(current.rotation + 90 * phase) % 360)
        frames.append(render(moved, size, style=hard_style if rng.random() < hard else "plain"))
    return frames


def write_video(path: str | Path, frames: Sequence[Image.Image], fps: int = 8, *, codec: str = "libx264",
                keyframe_every: int | None = None) -> Path:
    """Encode ``frames`` into a video file with PyAV (``pip install av``); ``keyframe_every``: frames
    between keyframes (the GOP), by default one second."""
    import av

    path = Path(path)
    width, height = frames[0].size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.gop_size = keyframe_every or fps
        for image in frames:
            frame = av.VideoFrame.from_image(image.convert("RGB"))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_video_dataset(out_dir: str | Path, per_class: int, seed: int, *, split: Split = "seen",
                        seconds: float = 4.0, fps: int = 8, size: int = 64, hard: float = 0.0,
                        hard_style: Style = "tiny") -> Path:
    """A class-per-folder tree of moving-shape videos (``OUT/red_star/0000.mp4``): ``zsclip eval --data OUT``."""
    out = Path(out_dir)
    rng = random.Random(seed)
    for colour, shape in combinations(split):
        folder = out / f"{colour}_{shape}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            spec = sample_spec(rng, [(colour, shape)])
            write_video(folder / f"{index:04d}.mp4",
                        video_frames(spec, seconds, fps, size, hard=hard, hard_style=hard_style,
                                     seed=rng.randrange(2**31)), fps)
    return out


def _main() -> None:
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("out_dir", type=click.Path(file_okay=False))
    @click.option("--per-class", default=20, show_default=True, type=click.IntRange(min=1),
                  help="Images per colour-shape pair.")
    @click.option("--seed", default=1, show_default=True, type=int,
                  help="Random seed (the demo model was trained on seed 0's stream).")
    @click.option("--split", type=click.Choice(["all", "seen", "held-out"]), default="all", show_default=True,
                  help="Which colour-shape pairs: all 48, the 40 seen in training, or the 8 held out.")
    @click.option("--label", type=click.Choice(["both", "colour", "shape"]), default="both", show_default=True,
                  help='How images are labelled: "red star", "red" or "star".')
    @click.option("--size", default=64, show_default=True, type=click.IntRange(min=16), help="Image side in pixels.")
    @click.option("--style", default="plain", show_default=True,
                  help=f"Distribution shift: {', '.join(STYLES)}, or several joined by '+' (outline+tiny).")
    def generate(out_dir, per_class, seed, split, label, size, style) -> None:
        """Draw a labelled set of synthetic shapes images (the world the demo model knows).

        \b
        Writes OUT_DIR/images/*.png, OUT_DIR/manifest.csv and OUT_DIR/labels.txt; evaluate with
          zsclip eval --data OUT_DIR/manifest.csv --labels-file OUT_DIR/labels.txt --model demo
        """
        try:
            parse_style(style)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--style") from None
        manifest = write_dataset(out_dir, per_class, seed, split, label, size, style=style)
        count = per_class * len(combinations(split))
        click.echo(f"wrote {count} {style} images of {split} pairs labelled by {label} to {manifest.parent}; "
                   "evaluate with\n"
                   f"  zsclip eval --data {manifest} --labels-file {manifest.parent / 'labels.txt'} --model demo")

    generate()


if __name__ == "__main__":
    _main()
