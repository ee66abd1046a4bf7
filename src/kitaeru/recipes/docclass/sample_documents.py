"""Synthetic document templates for the quick start and the tests of the document classifier.

Five layouts drawn with Pillow: an ID card, a passport data page (with a two-line machine-readable
zone), a shop receipt, a form with boxes and check boxes, and a letter. Every template has rendered
text, a "photo" made of shapes where the real document has one, and its own colours and wording
drawn from a seeded generator, so ``seed`` fully determines the output and two different seeds give
two different documents of the same kind.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

DOCUMENT_KINDS = ("id_card", "passport", "receipt", "form", "letter")

_SURNAMES = ("SATO", "SUZUKI", "TANAKA", "WATANABE", "MULLER", "GARCIA", "NOVAK", "SILVA", "KOWALSKI", "ERIKSSON", "OKAFOR", "NGUYEN")
_GIVEN = ("HANA", "KENJI", "ANNA", "LUCAS", "MARIA", "YUKI", "PEDRO", "SOFIA", "OMAR", "LENA", "TARO", "MEI")
_WORDS = (
    "account", "amount", "address", "balance", "branch", "certificate", "claim", "contract", "customer",
    "date", "delivery", "department", "document", "insurance", "invoice", "license", "number", "office",
    "payment", "period", "policy", "reference", "registration", "request", "service", "signature",
    "statement", "tax", "total", "transfer", "valid", "vehicle", "resident", "notice", "approval",
)
_ITEMS = ("coffee", "bread", "milk", "apples", "rice", "tea", "eggs", "noodles", "soap", "paper", "pens", "juice", "salad", "tofu")
_COUNTRIES = ("UTO", "JPN", "DEU", "FRA", "BRA", "POL", "SWE", "NGA", "VNM", "ESP")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _colour(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(rng.randint(lo, hi) for _ in range(3))  # type: ignore[return-value]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _portrait(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: random.Random) -> None:
    """A photo drawn as shapes: backdrop, shoulders and a head."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=_colour(rng, 150, 230), outline=(60, 60, 60), width=2)
    w, h = x1 - x0, y1 - y0
    skin = _colour(rng, 120, 220)
    draw.ellipse((x0 + w * 0.1, y0 + h * 0.62, x0 + w * 0.9, y1 + h * 0.3), fill=_colour(rng, 20, 120))
    draw.ellipse((x0 + w * 0.28, y0 + h * 0.15, x0 + w * 0.72, y0 + h * 0.65), fill=skin)
    draw.chord((x0 + w * 0.26, y0 + h * 0.1, x0 + w * 0.74, y0 + h * 0.5), 180, 360, fill=_colour(rng, 10, 90))


def _mrz_line(text: str, length: int) -> str:
    clean = "".join(c if c.isalnum() else "<" for c in text.upper())
    return (clean + "<" * length)[:length]


def _id_card(rng: random.Random) -> Image.Image:
    w, h = 856, 540
    img = Image.new("RGB", (w, h), _colour(rng, 200, 250))
    d = ImageDraw.Draw(img)
    band = _colour(rng, 30, 160)
    d.rectangle((0, 0, w, 90), fill=band)
    d.text((30, 22), f"{rng.choice(_COUNTRIES)} {rng.choice(('IDENTITY CARD', 'RESIDENCE CARD', 'DRIVER LICENSE'))}", font=_font(40), fill=(255, 255, 255))
    _portrait(d, (40, 130, 270, 430), rng)
    surname, given = rng.choice(_SURNAMES), rng.choice(_GIVEN)
    fields = [("Surname", surname), ("Given names", given), ("Date of birth", f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1950, 2005)}"),
              ("Card no.", _digits(rng, 9)), ("Expiry", f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(2026, 2036)}")]
    y = 120
    for label, value in fields:
        d.text((310, y), label, font=_font(18), fill=(90, 90, 90))
        d.text((310, y + 20), value, font=_font(30), fill=(10, 10, 10))
        y += 62
    d.ellipse((w - 150, h - 170, w - 40, h - 60), outline=band, width=6)
    d.text((40, h - 50), _mrz_line(f"ID{rng.choice(_COUNTRIES)}{_digits(rng, 9)}", 30), font=_font(26), fill=(20, 20, 20))
    return img


def _passport(rng: random.Random) -> Image.Image:
    w, h = 1000, 704
    img = Image.new("RGB", (w, h), _colour(rng, 215, 250))
    d = ImageDraw.Draw(img)
    tint = _colour(rng, 120, 220)
    for y in range(0, h - 170, 24):  # guilloche-like background lines
        d.arc((-200, y - 200, w + 200, y + 200), 0, 180, fill=tint, width=1)
    country = rng.choice(_COUNTRIES)
    d.text((40, 24), f"PASSPORT  {country}", font=_font(40), fill=_colour(rng, 10, 90))
    _portrait(d, (40, 100, 300, 440), rng)
    surname, given = rng.choice(_SURNAMES), rng.choice(_GIVEN)
    number = rng.choice(string.ascii_uppercase) + _digits(rng, 8)
    fields = [("Type", "P"), ("Passport No.", number), ("Surname", surname), ("Given names", given),
              ("Nationality", country), ("Date of expiry", f"{rng.randint(1, 28):02d} {rng.choice(('JAN', 'MAR', 'JUN', 'SEP', 'DEC'))} {rng.randint(2027, 2036)}")]
    y = 100
    for label, value in fields:
        d.text((340, y), label, font=_font(18), fill=(80, 80, 80))
        d.text((340, y + 20), value, font=_font(30), fill=(15, 15, 15))
        y += 58
    d.rectangle((0, h - 150, w, h), fill=(250, 250, 245))
    line1 = _mrz_line(f"P<{country}{surname}<<{given}", 44)
    line2 = _mrz_line(f"{number}{_digits(rng, 1)}{country}{_digits(rng, 7)}M{_digits(rng, 7)}", 44)
    d.text((30, h - 130), line1, font=_font(34), fill=(10, 10, 10))
    d.text((30, h - 70), line2, font=_font(34), fill=(10, 10, 10))
    return img


def _receipt(rng: random.Random) -> Image.Image:
    w, h = 420, 1000
    img = Image.new("RGB", (w, h), _colour(rng, 235, 255))
    d = ImageDraw.Draw(img)
    shop = rng.choice(("MART", "STORE", "MARKET", "SHOP", "DELI")) + " " + rng.choice(_SURNAMES)
    d.text((w // 2, 40), shop, font=_font(34), fill=(10, 10, 10), anchor="mm")
    d.text((w // 2, 80), f"Tel {_digits(rng, 3)}-{_digits(rng, 4)}", font=_font(20), fill=(40, 40, 40), anchor="mm")
    d.line((20, 110, w - 20, 110), fill=(60, 60, 60), width=2)
    y, total = 130, 0.0
    for _ in range(rng.randint(6, 14)):
        price = rng.randint(50, 2500) / 10
        total += price
        d.text((24, y), rng.choice(_ITEMS), font=_font(22), fill=(20, 20, 20))
        d.text((w - 24, y), f"{price:.2f}", font=_font(22), fill=(20, 20, 20), anchor="ra")
        y += 34
    d.line((20, y + 10, w - 20, y + 10), fill=(60, 60, 60), width=2)
    d.text((24, y + 24), "TOTAL", font=_font(30), fill=(0, 0, 0))
    d.text((w - 24, y + 24), f"{total:.2f}", font=_font(30), fill=(0, 0, 0), anchor="ra")
    bars_y = min(h - 140, y + 90)
    x = 40
    while x < w - 40:  # a barcode
        width = rng.randint(1, 5)
        d.rectangle((x, bars_y, x + width, bars_y + 80), fill=(0, 0, 0))
        x += width + rng.randint(2, 6)
    d.text((w // 2, bars_y + 110), "THANK YOU", font=_font(24), fill=(30, 30, 30), anchor="mm")
    return img


def _form(rng: random.Random) -> Image.Image:
    w, h = 707, 1000
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    accent = _colour(rng, 0, 180)
    d.rectangle((0, 0, w, 70), fill=accent)
    d.text((30, 18), f"{rng.choice(_WORDS).upper()} {rng.choice(_WORDS).upper()} FORM", font=_font(32), fill=(255, 255, 255))
    y = 100
    for _ in range(rng.randint(5, 9)):
        d.text((30, y), _words(rng, 2).capitalize(), font=_font(20), fill=(30, 30, 30))
        d.rectangle((240, y - 4, w - 30, y + 30), outline=accent, width=2)
        y += 52
    y += 10
    for _ in range(rng.randint(2, 4)):
        d.rectangle((30, y, 54, y + 24), outline=(0, 0, 0), width=2)
        if rng.random() < 0.5:
            d.line((34, y + 12, 42, y + 20, 52, y + 2), fill=(0, 0, 0), width=3)
        d.text((70, y), _words(rng, 4), font=_font(20), fill=(30, 30, 30))
        y += 40
    rows, cols = rng.randint(3, 5), rng.randint(3, 4)
    top = y + 20
    cell_w, cell_h = (w - 60) // cols, 40
    for r in range(rows + 1):
        d.line((30, top + r * cell_h, 30 + cols * cell_w, top + r * cell_h), fill=(0, 0, 0), width=2)
    for c in range(cols + 1):
        d.line((30 + c * cell_w, top, 30 + c * cell_w, top + rows * cell_h), fill=(0, 0, 0), width=2)
    d.rectangle((30, top, 30 + cols * cell_w, top + cell_h), fill=accent)
    d.text((30, h - 80), "Signature", font=_font(20), fill=(30, 30, 30))
    d.line((150, h - 55, 450, h - 55), fill=(0, 0, 0), width=2)
    return img


def _letter(rng: random.Random) -> Image.Image:
    w, h = 707, 1000
    img = Image.new("RGB", (w, h), _colour(rng, 240, 255))
    d = ImageDraw.Draw(img)
    logo = _colour(rng, 0, 200)
    shape = rng.choice(("circle", "square", "triangle"))
    if shape == "circle":
        d.ellipse((30, 30, 110, 110), fill=logo)
    elif shape == "square":
        d.rectangle((30, 30, 110, 110), fill=logo)
    else:
        d.polygon([(70, 25), (115, 110), (25, 110)], fill=logo)
    d.text((130, 45), f"{rng.choice(_SURNAMES).title()} & {rng.choice(_SURNAMES).title()} Co.", font=_font(34), fill=logo)
    d.line((30, 130, w - 30, 130), fill=logo, width=3)
    d.text((w - 30, 160), f"{rng.randint(1, 28)} {rng.choice(('May', 'June', 'October'))} {rng.randint(2019, 2025)}", font=_font(20), fill=(40, 40, 40), anchor="ra")
    d.text((40, 220), f"Dear {rng.choice(_GIVEN).title()} {rng.choice(_SURNAMES).title()},", font=_font(24), fill=(20, 20, 20))
    y = 270
    for _ in range(rng.randint(3, 5)):
        for _ in range(rng.randint(3, 5)):
            d.text((40, y), _words(rng, rng.randint(4, 6)), font=_font(20), fill=(30, 30, 30))
            y += 28
        y += 24
    d.text((40, min(y + 20, h - 120)), "Sincerely,", font=_font(22), fill=(20, 20, 20))
    d.line((40, min(y + 90, h - 50), 300, min(y + 90, h - 50)), fill=(20, 20, 90), width=3)
    return img


_RENDERERS: dict[str, Callable[[random.Random], Image.Image]] = {
    "id_card": _id_card, "passport": _passport, "receipt": _receipt, "form": _form, "letter": _letter,
}


def render_document(kind: str, seed: int) -> Image.Image:
    """One synthetic document of ``kind`` (see :data:`DOCUMENT_KINDS`), fully determined by ``seed``."""
    if kind not in _RENDERERS:
        from kitaeru.core.errors import ConfigError

        raise ConfigError(f"--kinds: unknown document kind '{kind}' (choose from {', '.join(DOCUMENT_KINDS)})")
    return _RENDERERS[kind](random.Random(f"{kind}:{seed}"))


def generate_documents(out_dir: str | Path, num: int, *, seed: int = 0, kinds: Sequence[str] = DOCUMENT_KINDS) -> list[Path]:
    """Write ``num`` templates as ``<kind>_<nnn>.png`` into ``out_dir``, cycling through ``kinds``."""
    from kitaeru.core.errors import ConfigError
    from kitaeru.core.storage import atomic_path, ensure_writable_dir

    if num < 1:
        raise ConfigError(f"--num: must be at least 1 (got {num})")
    if not kinds:
        raise ConfigError("--kinds: give at least one document kind")
    for kind in kinds:
        if kind not in _RENDERERS:
            raise ConfigError(f"--kinds: unknown document kind '{kind}' (choose from {', '.join(DOCUMENT_KINDS)})")
    folder = ensure_writable_dir(out_dir)
    written = []
    for index in range(num):
        kind = kinds[index % len(kinds)]
        image = render_document(kind, seed * 100_003 + index)
        target = folder / f"{kind}_{index:03d}.png"
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
        written.append(target)
    return written


def write_document_photos(templates: Sequence[Path], out_dir: str | Path, *, seed: int = 0, size: int = 320) -> list[Path]:
    """One synthetic photo (mild perspective, lighting, JPEG) of each template as ``<stem>.jpg``."""
    from kitaeru.core.storage import atomic_path, ensure_writable_dir
    from kitaeru.recipes.docclass.documents import DocumentAugment, augmented_photo

    folder = ensure_writable_dir(out_dir)
    augment = DocumentAugment(
        size, perspective=0.1, margin=0.06, brightness=0.15, contrast=0.15, saturation=0.05, hue=0.0,
        shadow_p=0.3, blur_p=0.2, noise_std=0.01, crop_scale=(0.95, 1.0), scan_p=0.0,
    )
    written = []
    for index, path in enumerate(templates):
        from kitaeru.data.images import open_image

        photo = augmented_photo(open_image(path), augment, seed=seed * 100_003 + index)
        target = folder / f"{Path(path).stem}.jpg"
        with atomic_path(target) as tmp:
            photo.save(tmp, format="JPEG", quality=88)
        written.append(target)
    return written
