"""Pictures of the generated driving scenes: a dash-camera-like drawing of what a scene's
attributes say (sky, road, signs, traffic, weather), deterministic for a given random stream.

The drawing order is the random stream's order: a helper that draws more or fewer random numbers
would change every later scene picture, so each part keeps its draws in sequence.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:
    from .sample_scenes import SceneAttributes

DEFAULT_SIZE = (320, 240)


def _mix(c1, c2, f: float) -> tuple[int, int, int]:
    return tuple(int(round(a + (b - a) * f)) for a, b in zip(c1, c2))


def _jitter(color, rng: np.random.Generator, amount: int = 12) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


class _Road:
    """Perspective road geometry: centre line and half width at depth v (0 = bottom, 1 = horizon)."""

    def __init__(self, w: int, h: int, horizon: int, bottom_half: float, top_half: float, curve: float):
        self.w, self.h, self.horizon = w, h, horizon
        self.bottom_half, self.top_half, self.curve = bottom_half, top_half, curve

    def y(self, v: float) -> float:
        return self.h - (self.h - self.horizon) * v

    def centre(self, v: float) -> float:
        return self.w / 2 + self.curve * (v**2) * self.w * 0.55

    def half(self, v: float) -> float:
        return self.bottom_half + (self.top_half - self.bottom_half) * v

    def edge(self, v: float, offset: float) -> tuple[float, float]:
        """Point at lateral ``offset`` (-1 left edge, +1 right edge) and depth ``v``."""
        return self.centre(v) + offset * self.half(v), self.y(v)

    def strip(self, lo: float, hi: float, v0: float = 0.0, v1: float = 0.97, n: int = 24) -> list[tuple[float, float]]:
        vs = np.linspace(v0, v1, n)
        return [self.edge(v, lo) for v in vs] + [self.edge(v, hi) for v in vs[::-1]]

def render_scene(a: "SceneAttributes", rng: np.random.Generator, size: tuple[int, int] = DEFAULT_SIZE) -> Image.Image:
    """Draw the scene described by ``a`` (deterministic for a given ``rng`` state)."""
    w, h = size
    horizon = int(h * float(rng.uniform(0.40, 0.46)))
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img, "RGBA")
    night = a.time == "night"
    _sky(d, a, rng, w, horizon)
    dark = 0.35 if night else 0.75 if a.time == "dusk" else 1.0
    ground = {"highway": (95, 140, 75), "urban": (120, 120, 118), "rural": (80, 150, 60)}[a.road]
    if a.weather == "snow":
        ground = (232, 234, 240)
    ground = _mix((0, 0, 0), _jitter(ground, rng), dark)
    d.rectangle([0, horizon, w, h], fill=ground)

    curve = {"turn_left": -1.0, "turn_right": 1.0}.get(a.maneuver, 0.0) * float(rng.uniform(0.7, 1.0))
    half_bottom = {"highway": w * 0.62, "urban": w * 0.42, "rural": w * 0.30}[a.road]
    road = _Road(w, h, horizon, half_bottom, {"highway": 16, "urban": 10, "rural": 5}[a.road], curve)
    _background(d, a, rng, road, dark)
    line = _road_surface(d, a, rng, road, dark)
    _signs_and_lights(d, a, rng, road, line, dark)
    _traffic(d, a, rng, road, dark)
    _weather(d, a, rng, w, h)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    if a.weather == "fog":
        img = _fog(img, horizon, night)
    noise = rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def _sky(d: ImageDraw.ImageDraw, a: "SceneAttributes", rng: np.random.Generator, w: int, horizon: int) -> None:
    """The sky's gradient by time of day (greyed when overcast), with stars and moon, sun or setting sun."""
    night, dusk = a.time == "night", a.time == "dusk"
    overcast = a.weather in ("rain", "snow", "fog")
    top, low = {"day": ((95, 160, 230), (185, 215, 245)), "dusk": ((70, 55, 120), (250, 150, 70)),
                "night": ((4, 6, 22), (25, 30, 60))}[a.time]
    if overcast:
        grey = {"day": (150, 154, 160), "dusk": (125, 105, 105), "night": (22, 22, 28)}[a.time]
        top, low = _mix(top, grey, 0.8), _mix(low, grey, 0.7)
    for y in range(horizon + 1):
        d.line([(0, y), (w, y)], fill=_mix(top, low, y / max(horizon, 1)))
    if night and not overcast:
        for _ in range(40):
            x, y = rng.integers(0, w), rng.integers(0, horizon - 5)
            d.point((int(x), int(y)), fill=(230, 230, 255))
        mx = int(rng.integers(w // 5, 4 * w // 5))
        d.ellipse([mx, 12, mx + 16, 28], fill=(240, 240, 210))
    elif a.time == "day" and a.weather == "clear":
        sx = int(rng.integers(w // 6, 5 * w // 6))
        d.ellipse([sx, 10, sx + 22, 32], fill=(255, 245, 200))
    elif dusk and not overcast:
        sx = int(rng.integers(w // 4, 3 * w // 4))
        d.ellipse([sx, horizon - 14, sx + 28, horizon + 14], fill=(255, 190, 90))


def _background(d: ImageDraw.ImageDraw, a: "SceneAttributes", rng: np.random.Generator, road: _Road, dark: float) -> None:
    """What stands behind the road: hills (rural), a distant ridge (highway), buildings (city)."""
    w, horizon = road.w, road.horizon
    if a.road == "rural":
        hill = _mix((0, 0, 0), (60, 110, 70) if a.weather != "snow" else (200, 205, 215), dark)
        pts = [(0, horizon)] + [(x, horizon - 18 * abs(math.sin(x / w * 5 + rng.uniform(0, 0.3)))) for x in range(0, w + 8, 8)] + [(w, horizon)]
        d.polygon(pts, fill=hill)
    elif a.road == "highway":
        d.polygon([(0, horizon), (w * 0.3, horizon - 10), (w * 0.6, horizon - 4), (w, horizon - 12), (w, horizon)],
                  fill=_mix((0, 0, 0), (100, 120, 130), dark))
    if a.road == "urban":
        _buildings(d, rng, w, road.h, horizon, road, a.time == "night", dark)


def _road_surface(d: ImageDraw.ImageDraw, a: "SceneAttributes", rng: np.random.Generator, road: _Road, dark: float):
    """Asphalt, lane markings, rails / sidewalks / roadside trees by road type; returns the line colour."""
    asphalt = (70, 70, 74) if a.weather != "rain" else (45, 46, 52)
    if a.weather == "snow":
        asphalt = (150, 150, 155)
    d.polygon(road.strip(-1, 1), fill=_mix((0, 0, 0), asphalt, max(dark, 0.45)))
    line = _mix((0, 0, 0), (235, 235, 235), max(dark, 0.6))
    if a.road == "highway":
        for off in (-1 / 3, 1 / 3):
            _dashes(d, road, off, line, width=3)
        for off in (-0.97, 0.97):
            d.line([road.edge(v, off) for v in np.linspace(0, 0.97, 24)], fill=line, width=3)
        for off in (-1.08, 1.08):
            d.line([road.edge(v, off) for v in np.linspace(0, 0.97, 24)], fill=_mix((0, 0, 0), (170, 170, 175), dark), width=4)
    elif a.road == "urban":
        for off in (-1.25, 1.25):
            lo, hi = (min(off, off * 0.8), max(off, off * 0.8))
            d.polygon(road.strip(lo, hi), fill=_mix((0, 0, 0), (165, 160, 150), dark))
        _dashes(d, road, 0.0, _mix((0, 0, 0), (235, 200, 40), max(dark, 0.6)), width=3)
        _crosswalk(d, road, 0.30, line)
    else:
        _dashes(d, road, 0.0, line, width=2)
        for side in (-1, 1):
            for v in np.linspace(0.05, 0.85, 6) + rng.uniform(-0.02, 0.02):
                _tree(d, road, v, side * float(rng.uniform(1.6, 2.6)), dark, a.weather == "snow")
    return line


def _signs_and_lights(d: ImageDraw.ImageDraw, a: "SceneAttributes", rng: np.random.Generator, road: _Road, line,
                      dark: float) -> None:
    """The manoeuvre's cues (turn arrow and curve sign, stop line and red light) and night lighting."""
    night = a.time == "night"
    if a.maneuver in ("turn_left", "turn_right"):
        direction = -1 if a.maneuver == "turn_left" else 1
        if a.road == "urban":
            _road_arrow(d, road, direction, line)
        _curve_sign(d, road, direction, dark)
    light = "red" if a.maneuver == "stop" else ("green" if a.road == "urban" else None)
    if a.maneuver == "stop":
        p0, p1 = road.edge(0.42, -1), road.edge(0.42, 1)
        d.line([p0, p1], fill=line, width=5)
    if light:
        _traffic_light(d, road, light, night)
    if night:
        _street_lamps(d, road, rng)
        beam = [road.edge(0.0, -0.55), road.edge(0.0, 0.55), road.edge(0.45, 0.3), road.edge(0.45, -0.3)]
        d.polygon(beam, fill=(255, 240, 190, 55))


def _traffic(d: ImageDraw.ImageDraw, a: "SceneAttributes", rng: np.random.Generator, road: _Road, dark: float) -> None:
    """Cars and pedestrians, far ones first so near ones overlap them."""
    objects: list[tuple[float, str, Any]] = []
    lanes = {"highway": (-2 / 3, 0.0, 2 / 3), "urban": (-0.5, 0.5), "rural": (-0.45, 0.45)}[a.road]
    for i in range(a.vehicles):
        v = float(rng.uniform(0.2, 0.65)) if a.maneuver != "stop" else float(rng.uniform(0.45, 0.62))
        objects.append((v, "car", lanes[i % len(lanes)] + float(rng.uniform(-0.06, 0.06))))
    for _ in range(a.pedestrians):
        v = float(rng.uniform(0.22, 0.38)) if a.road == "urban" else float(rng.uniform(0.15, 0.5))
        offset = float(rng.uniform(-0.9, 0.9)) if a.road == "urban" and rng.random() < 0.6 else float(rng.choice([-1.2, 1.2]))
        objects.append((v, "person", offset))
    for v, kind, offset in sorted(objects, key=lambda o: -o[0]):
        if kind == "car":
            _car(d, road, v, offset, rng, a.time == "night", braking=a.maneuver == "stop", dark=dark)
        else:
            _person(d, road, v, offset, rng, dark)


def _weather(d: ImageDraw.ImageDraw, a: "SceneAttributes", rng: np.random.Generator, w: int, h: int) -> None:
    """Rain streaks or snowflakes over everything (fog is applied to the finished picture)."""
    if a.weather == "rain":
        for _ in range(170):
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            d.line([(x, y), (x - 4, y + 14)], fill=(210, 215, 230, 120 if a.time != "night" else 80), width=1)
    elif a.weather == "snow":
        for _ in range(220):
            x, y, r = float(rng.uniform(0, w)), float(rng.uniform(0, h)), float(rng.uniform(0.8, 2.2))
            d.ellipse([x - r, y - r, x + r, y + r], fill=(250, 250, 255, 220))


def _dashes(d: ImageDraw.ImageDraw, road: _Road, offset: float, color, width: int) -> None:
    vs = np.linspace(0.0, 0.95, 15)
    for v0, v1 in zip(vs[::2], vs[1::2]):
        d.line([road.edge(v0, offset), road.edge(v1, offset)], fill=color, width=max(1, int(width * (1 - v0))))


def _crosswalk(d: ImageDraw.ImageDraw, road: _Road, v: float, color) -> None:
    for k in range(-4, 5):
        a0, a1 = k / 5 - 0.06, k / 5 + 0.06
        d.polygon([road.edge(v, a0), road.edge(v, a1), road.edge(v + 0.06, a1), road.edge(v + 0.06, a0)], fill=color)


def _buildings(d, rng, w, h, horizon, road: _Road, night: bool, dark: float) -> None:
    for side in (-1, 1):
        x_far = road.edge(0.9, side * 1.3)[0]
        x = 0 if side < 0 else w
        while (side < 0 and x < x_far - 4) or (side > 0 and x > x_far + 4):
            bw = int(rng.integers(28, 60))
            x2 = x - side * bw  # from the image border inwards, towards the vanishing point
            near = abs(x - w / 2) / (w / 2)
            top = horizon - int(rng.integers(30, 90) * (0.4 + near))
            colour = _mix((0, 0, 0), _jitter((140, 125, 115), rng, 30), dark)
            left, right = sorted((x, x2))
            d.rectangle([left, top, right, horizon + int(12 * near)], fill=colour, outline=(30, 30, 30))
            win = (250, 220, 120) if night else _mix((0, 0, 0), (90, 120, 150), dark)
            for wy in range(top + 6, horizon - 4, 12):
                for wx in range(left + 5, right - 6, 10):
                    if not night or rng.random() < 0.6:
                        d.rectangle([wx, wy, wx + 4, wy + 6], fill=win)
            x = x2


def _tree(d, road: _Road, v: float, offset: float, dark: float, snow: bool) -> None:
    x, y = road.edge(v, offset)
    s = 30 * (1 - v) + 4
    d.rectangle([x - s * 0.08, y - s * 0.6, x + s * 0.08, y], fill=_mix((0, 0, 0), (90, 60, 35), dark))
    leaf = (230, 235, 240) if snow else (30, 100, 40)
    d.ellipse([x - s * 0.4, y - s * 1.3, x + s * 0.4, y - s * 0.45], fill=_mix((0, 0, 0), leaf, dark))


def _road_arrow(d, road: _Road, direction: int, color) -> None:
    (x0, y0), (x1, y1) = road.edge(0.12, 0.0), road.edge(0.22, 0.0)
    stem = max(4.0, road.half(0.12) * 0.08)
    d.line([(x0, y0), (x1, y1)], fill=color, width=int(stem))
    tip = (x1 + direction * road.half(0.22) * 0.45, y1)
    d.line([(x1, y1), tip], fill=color, width=int(stem))
    head = road.half(0.22) * 0.12
    d.polygon([(tip[0] + direction * head, tip[1]), (tip[0], tip[1] - head), (tip[0], tip[1] + head)], fill=color)


def _curve_sign(d, road: _Road, direction: int, dark: float) -> None:
    side = 1 if direction > 0 else -1
    x, y = road.edge(0.25, side * 1.35)
    s = 16
    d.line([(x, y), (x, y - 2.2 * s)], fill=_mix((0, 0, 0), (150, 150, 150), dark), width=2)
    cy = y - 2.6 * s
    yellow = _mix((0, 0, 0), (250, 200, 0), max(dark, 0.7))
    d.polygon([(x, cy - s), (x + s, cy), (x, cy + s), (x - s, cy)], fill=yellow, outline=(20, 20, 20))
    k = direction * s  # the arrow inside the diamond points the way the road bends
    d.line([(x - 0.45 * k, cy + 0.4 * s), (x - 0.1 * k, cy - 0.2 * s), (x + 0.45 * k, cy - 0.2 * s)], fill=(20, 20, 20), width=3)
    d.polygon([(x + 0.6 * k, cy - 0.2 * s), (x + 0.3 * k, cy - 0.45 * s), (x + 0.3 * k, cy + 0.05 * s)], fill=(20, 20, 20))


def _traffic_light(d, road: _Road, colour: str, night: bool) -> None:
    x, y = road.edge(0.45, 1.15)
    d.line([(x, y), (x, y - 48)], fill=(60, 60, 60), width=3)
    box = [x - 7, y - 78, x + 7, y - 44]
    d.rectangle(box, fill=(25, 25, 25))
    on = {"red": (255, 30, 20), "green": (40, 240, 90)}[colour]
    cy = y - 70 if colour == "red" else y - 52
    if night:
        d.ellipse([x - 14, cy - 14, x + 14, cy + 14], fill=on + (90,))
    d.ellipse([x - 5, cy - 5, x + 5, cy + 5], fill=on)


def _street_lamps(d, road: _Road, rng) -> None:
    for v in (0.15, 0.4, 0.65):
        for side in (-1, 1):
            x, y = road.edge(v, side * 1.15)
            hgt = 90 * (1 - v) + 8
            d.line([(x, y), (x, y - hgt)], fill=(70, 70, 70), width=2)
            r = 10 * (1 - v) + 3
            d.ellipse([x - r * 2, y - hgt - r * 2, x + r * 2, y - hgt + r * 2], fill=(255, 220, 140, 60))
            d.ellipse([x - r * 0.5, y - hgt - r * 0.5, x + r * 0.5, y - hgt + r * 0.5], fill=(255, 235, 170))


_CAR_COLOURS = ((200, 30, 30), (30, 60, 170), (230, 230, 230), (40, 40, 40), (200, 170, 40), (90, 90, 95))


def _car(d, road: _Road, v: float, offset: float, rng, night: bool, braking: bool, dark: float) -> None:
    x, y = road.edge(v, offset)
    cw = road.half(v) * (0.45 if road.top_half > 12 else 0.7)
    ch = cw * 0.75
    paint = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
    body = _mix((0, 0, 0), _jitter(paint, rng), max(dark, 0.5))
    d.rectangle([x - cw / 2, y - ch, x + cw / 2, y - ch * 0.15], fill=body, outline=(15, 15, 15))
    d.rectangle([x - cw * 0.38, y - ch * 1.45, x + cw * 0.38, y - ch * 0.95], fill=_mix(body, (0, 0, 0), 0.3))
    d.rectangle([x - cw * 0.3, y - ch * 1.38, x + cw * 0.3, y - ch * 1.0], fill=(40, 50, 60))
    for sx in (-1, 1):
        d.rectangle([x + sx * cw * 0.45 - cw * 0.08, y - ch * 0.2, x + sx * cw * 0.45 + cw * 0.08, y], fill=(10, 10, 10))
        lx = x + sx * cw * 0.36
        bright = night or braking
        tail = (255, 40, 30) if bright else (150, 20, 20)
        if bright:
            r = cw * 0.16
            d.ellipse([lx - r, y - ch * 0.62 - r, lx + r, y - ch * 0.62 + r], fill=(255, 40, 30, 90))
        d.rectangle([lx - cw * 0.07, y - ch * 0.7, lx + cw * 0.07, y - ch * 0.55], fill=tail)


def _person(d, road: _Road, v: float, offset: float, rng, dark: float) -> None:
    x, y = road.edge(v, offset)
    hgt = 70 * (1 - v) + 10
    shirt = _mix((0, 0, 0), _jitter([(220, 60, 40), (40, 110, 200), (240, 200, 40), (60, 160, 80)][int(rng.integers(4))], rng), max(dark, 0.6))
    legs = _mix((0, 0, 0), (40, 40, 70), max(dark, 0.6))
    d.line([(x, y - hgt * 0.45), (x - hgt * 0.12, y)], fill=legs, width=max(2, int(hgt * 0.08)))
    d.line([(x, y - hgt * 0.45), (x + hgt * 0.12, y)], fill=legs, width=max(2, int(hgt * 0.08)))
    d.rectangle([x - hgt * 0.12, y - hgt * 0.82, x + hgt * 0.12, y - hgt * 0.42], fill=shirt)
    r = hgt * 0.1
    d.ellipse([x - r, y - hgt * 0.82 - 2 * r, x + r, y - hgt * 0.82], fill=_mix((0, 0, 0), (230, 190, 160), max(dark, 0.6)))


def _fog(img: Image.Image, horizon: int, night: bool) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    h = arr.shape[0]
    rows = np.arange(h, dtype=np.float32)
    distance = np.where(rows <= horizon, 1.0, 1.0 - (rows - horizon) / max(h - horizon, 1))
    alpha = (0.35 + 0.5 * distance)[:, None, None]
    haze = np.array((70, 70, 78) if night else (205, 207, 210), dtype=np.float32)
    return Image.fromarray(np.clip(arr * (1 - alpha) + haze * alpha, 0, 255).astype(np.uint8))
