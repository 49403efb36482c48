"""Text on Pillow images, shared by the comparison sheet and the loss curves.

Pillow draws everything here, so pictures need no plotting library.
"""

from __future__ import annotations

from PIL import ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
FAINT_INK = (110, 110, 110)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def font(size: int) -> Font:
    """Pillow's bundled font (DejaVu-like), scalable where FreeType is built in."""
    return ImageFont.load_default(size=size)


def line_height(face: Font) -> int:
    left, top, right, bottom = face.getbbox("Hgjy")
    return int(bottom - top) + 4


def wrap(text: str, face: Font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word longer than that gets its own line."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and face.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def fit_text(text: str, face: Font, width: int) -> str:
    """``text``, cut short with an ellipsis where it is wider than ``width`` pixels."""
    if face.getlength(text) <= width:
        return text
    while text and face.getlength(f"{text}…") > width:
        text = text[:-1]
    return f"{text}…"


def draw_lines(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: list[str], face: Font, fill: tuple[int, int, int] = INK
) -> int:
    """Draw lines top-down from ``xy``; returns the y below the last one."""
    x, y = xy
    for line in lines:
        draw.text((x, y), line, font=face, fill=fill)
        y += line_height(face)
    return y
