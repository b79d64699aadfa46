"""The tiny world: compositional scenes drawn in code, each with a caption from a small grammar.

A scene is one or two shapes of one colour and size, in one region of the picture, on a coloured
background: "two small red triangles on the left, blue background". Everything is deterministic from a
seed and nothing is downloaded. Images are drawn at 4x with PIL and downsampled with a Lanczos filter,
so edges are anti-aliased as in a photograph of the scene.

Splits (`split_scenes`) are disjoint by seed (each split draws from its own seed range) and by held-out
combinations: the (colour, shape) pairs in `HELD_OUT` never appear in the training split, so a model
trained on it is tested on compositions it has not seen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

RESOLUTION = 32  # pixels per side of a scene image
OVERSAMPLE = 4  # drawn at RESOLUTION * OVERSAMPLE, then downsampled

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 205, 35),
    "purple": (145, 55, 185),
    "white": (240, 240, 240),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (120, 120, 120),
    "blue": (30, 45, 110),
    "green": (30, 85, 40),
    "brown": (105, 70, 40),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
COUNTS = (1, 2)
PLACES = {  # how a caption says where the objects are
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
# (colour, shape) pairs kept out of the training split: the test split asks for them.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("purple", "triangle"), ("yellow", "cross"), ("white", "circle"), ("red", "square")}
)

Split = Literal["train", "validation", "test", "judge", "scorer"]
# Each split draws its scenes and jitter from its own seed range.
SPLIT_SEED_BASE: dict[str, int] = {
    "train": 0,  # the text-to-image model's
    "validation": 1_000_000,
    "test": 2_000_000,  # held-out colour-shape pairs only
    "judge": 3_000_000,  # the judge's
    "scorer": 4_000_000,  # the evaluator's CLIP scorer's
}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    position: str
    count: int
    background: str

    def __post_init__(self) -> None:
        problems = []
        if self.shape not in SHAPES:
            problems.append(f"shape {self.shape!r}")
        if self.colour not in COLOURS:
            problems.append(f"colour {self.colour!r}")
        if self.size not in SIZES:
            problems.append(f"size {self.size!r}")
        if self.position not in POSITIONS:
            problems.append(f"position {self.position!r}")
        if self.count not in COUNTS:
            problems.append(f"count {self.count!r}")
        if self.background not in BACKGROUNDS:
            problems.append(f"background {self.background!r}")
        if problems:
            raise ValueError("unknown " + ", ".join(problems))

    @property
    def caption(self) -> str:
        """'two small red triangles on the left, blue background'."""
        noun = plural(self.shape) if self.count > 1 else self.shape
        article = "a" if self.count == 1 else "two"
        place = PLACES[self.position]
        return f"{article} {self.size} {self.colour} {noun} {place}, {self.background} background"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def parse_caption(caption: str) -> Scene:
    """The scene a caption describes (the inverse of `Scene.caption`); ValueError when it is not one."""
    try:
        objects, background = caption.split(", ")
        words = objects.split()
        article, size, colour, noun = words[:4]
        place = " ".join(words[4:])
        positions = {phrase: position for position, phrase in PLACES.items()}
        nouns = {plural(shape) if article == "two" else shape: shape for shape in SHAPES}
        shape = nouns[noun]
        return Scene(
            shape=shape,
            colour=colour,
            size=size,
            position=positions[place],
            count={"a": 1, "two": 2}[article],
            background=background.removesuffix(" background"),
        )
    except (ValueError, KeyError) as err:
        raise ValueError(f"not a tiny-world caption: {caption!r}") from err


def random_scene(rng: random.Random, allow: Literal["all", "seen", "held-out"] = "all") -> Scene:
    """A uniformly drawn scene; `allow` restricts its (colour, shape) pair to the seen or held-out ones."""
    while True:
        scene = Scene(
            shape=rng.choice(SHAPES),
            colour=rng.choice(tuple(COLOURS)),
            size=rng.choice(SIZES),
            position=rng.choice(POSITIONS),
            count=rng.choice(COUNTS),
            background=rng.choice(tuple(BACKGROUNDS)),
        )
        held_out = (scene.colour, scene.shape) in HELD_OUT
        if allow == "all" or (allow == "held-out") == held_out:
            return scene


def split_scenes(split: Split, n: int) -> list[tuple[Scene, int]]:
    """n (scene, seed) pairs of a split. The training split never holds a HELD_OUT pair; the test split
    holds only those; validation and the judge's split hold any."""
    allow = {"train": "seen", "test": "held-out"}.get(split, "all")
    base = SPLIT_SEED_BASE[split]
    return [(random_scene(random.Random(base + i), allow), base + i) for i in range(n)]  # type: ignore[arg-type]


# ----- drawing ---------------------------------------------------------------------------------------
_REGIONS = {  # (x0, y0, x1, y1) of each position, as fractions of the picture
    "left": (0.0, 0.15, 0.5, 0.85),
    "right": (0.5, 0.15, 1.0, 0.85),
    "top": (0.15, 0.0, 0.85, 0.5),
    "bottom": (0.15, 0.5, 0.85, 1.0),
    "center": (0.25, 0.25, 0.75, 0.75),
}
_SIZE_FRACTION = {"small": 0.16, "large": 0.3}  # object side as a fraction of the picture


def object_centres(scene: Scene, rng: random.Random) -> Iterator[tuple[float, float]]:
    """Where each object sits (fractions of the picture): one in the middle of its region, or two
    side by side (stacked in the left and right regions), with a little jitter."""
    x0, y0, x1, y1 = _REGIONS[scene.position]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    jitter = 0.04
    if scene.count == 1:
        offsets: Sequence[tuple[float, float]] = ((0.0, 0.0),)
    elif scene.position in ("left", "right"):
        offsets = ((0.0, -0.17), (0.0, 0.17))
    else:
        offsets = ((-0.17, 0.0), (0.17, 0.0))
    for dx, dy in offsets:
        yield cx + dx + rng.uniform(-jitter, jitter), cy + dy + rng.uniform(-jitter, jitter)


# How a user's pictures differ from the plain world: the personal models' styles (`tinyworld.personal`).
STYLES = ("plain", "outline", "striped", "pastel", "shadow")


def render(scene: Scene, seed: int, resolution: int = RESOLUTION, style: str = "plain") -> Image.Image:
    """The scene as an RGB image; the seed moves objects and sizes a little, and shades the colours.
    A style changes how the objects are drawn, never what the caption says: `outline` draws their
    edges only, `striped` fills them with dark bands, `pastel` mixes every colour halfway to white,
    `shadow` casts a dark shadow down and to the right."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; one of {STYLES}")
    rng = random.Random(seed)
    big = resolution * OVERSAMPLE
    background = _shade(BACKGROUNDS[scene.background], rng, 8)
    colour = _shade(COLOURS[scene.colour], rng, 12)
    if style == "pastel":
        background, colour = _towards_white(background, 0.5), _towards_white(colour, 0.5)
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    side = _SIZE_FRACTION[scene.size] * rng.uniform(0.9, 1.1) * big
    centres = [(cx * big, cy * big) for cx, cy in object_centres(scene, rng)]
    if style == "shadow":
        dark = tuple(c // 4 for c in background)
        for cx, cy in centres:
            _draw_shape(draw, scene.shape, cx + side * 0.2, cy + side * 0.2, side, dark)
    for cx, cy in centres:
        _draw_shape(draw, scene.shape, cx, cy, side, colour, outline=style == "outline")
    if style == "striped":
        _stripe(image, background, big)
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS)


def _towards_white(rgb: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    r, g, b = (round(c + (255 - c) * share) for c in rgb)
    return r, g, b


def _stripe(image: Image.Image, background: tuple[int, int, int], big: int) -> None:
    """Darken every other band of 2 output pixels' height, on the objects only (not the background)."""
    pixels = np.asarray(image).copy()
    on_object = np.abs(pixels.astype(int) - np.array(background)).sum(-1) > 24
    band = (np.arange(big) // (2 * OVERSAMPLE)) % 2 == 1
    dark = on_object & band[:, None]
    pixels[dark] = (pixels[dark] * 0.35).astype(np.uint8)
    image.paste(Image.fromarray(pixels))


def _shade(rgb: tuple[int, int, int], rng: random.Random, spread: int) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + rng.randint(-spread, spread))) for c in rgb)
    return r, g, b


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    side: float,
    fill: tuple,
    outline: bool = False,
) -> None:
    """A filled shape, or with `outline` its edge only (a sixth of its side wide)."""
    h = side / 2
    paint = {"outline": fill, "width": max(1, round(side / 6))} if outline else {"fill": fill}
    if shape == "circle":
        draw.ellipse((cx - h, cy - h, cx + h, cy + h), **paint)
    elif shape == "square":
        draw.rectangle((cx - h * 0.9, cy - h * 0.9, cx + h * 0.9, cy + h * 0.9), **paint)
    elif shape == "triangle":
        draw.polygon(((cx, cy - h), (cx + h, cy + h * 0.85), (cx - h, cy + h * 0.85)), **paint)
    elif outline:  # a cross's edge: its twelve corners
        w = side / 6
        corners = ((w, h), (w, w), (h, w), (h, -w), (w, -w), (w, -h))
        points = [(cx + x, cy + y) for x, y in corners] + [(cx - x, cy - y) for x, y in corners]
        draw.polygon(points, **paint)
    else:  # a cross: two bars a third of the side wide
        w = side / 6
        draw.rectangle((cx - h, cy - w, cx + h, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - h, cx + w, cy + h), fill=fill)


def render_batch(
    pairs: Sequence[tuple[Scene, int]], resolution: int = RESOLUTION, style: str = "plain"
) -> np.ndarray:
    """(n, resolution, resolution, 3) uint8 images of (scene, seed) pairs."""
    return np.stack([np.asarray(render(scene, seed, resolution, style)) for scene, seed in pairs])
