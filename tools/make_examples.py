"""Draw examples/: a handful of synthetic shapes images for the README's first command. Seeded.

    python tools/make_examples.py

Half the pictures show pairs the demo model saw in training, half show held-out pairs it never saw
(zsclip.shapes.HELD_OUT). File names are the true labels; labels.txt lists all 48 classes.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from zsclip import shapes

OUT = Path(__file__).resolve().parents[1] / "examples"
SEEN = [("green", "circle"), ("blue", "star"), ("orange", "ring"), ("yellow", "triangle"), ("black", "cross")]
HELD_OUT = [("red", "triangle"), ("green", "star"), ("blue", "ring"), ("purple", "circle"), ("white", "star")]


def main() -> None:
    rng = random.Random(2026)
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.png"):  # file names are labels: leave no stale picture behind
        old.unlink()
    for colour, shape in SEEN + HELD_OUT:
        # a clearly visible size: these pictures are for people to look at
        spec = dataclasses.replace(shapes.sample_spec(rng, [(colour, shape)]), radius=rng.uniform(0.28, 0.4),
                                   centre=(rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58)))
        shapes.render(spec, 128).save(OUT / f"{colour}_{shape}.png")
    (OUT / "labels.txt").write_text("\n".join(shapes.classnames("both")) + "\n")
    print(f"wrote {len(SEEN) + len(HELD_OUT)} images and labels.txt to {OUT}")


if __name__ == "__main__":
    main()
