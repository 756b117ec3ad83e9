"""Session fixture: a real headless Chromium (Debian's chromium-headless-shell, or chromium)
that renders a file to PNG, and a PNG reader to look at the pixels (zlib, no imaging package)."""

import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

from tests.conftest import require

BROWSERS = ("chromium-headless-shell", "chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@pytest.fixture(scope="session")
def chromium() -> Callable[..., bytes]:
    """``render(path, png, width, height)``: the page or SVG at ``path`` as PNG bytes."""
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    require(binary is not None, "headless Chromium not on PATH (apt-get install chromium-headless-shell)")

    def render(path: Path, png: Path, width: int = 1000, height: int = 1000) -> bytes:
        with tempfile.TemporaryDirectory(prefix="nexa-chromium-") as profile:
            argv = [binary, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}"]
            done = subprocess.run([*argv, Path(path).resolve().as_uri()], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
        return png.read_bytes()

    return render


def decode_png(data: bytes) -> Tuple[int, int, List[bytes]]:
    """``(width, height, rows)`` of an 8-bit RGB or RGBA PNG, each row ``width * channels``
    bytes with the scanline filters undone (the five of the PNG standard)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: List[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def pixel_counts(data: bytes) -> Tuple[int, int, int]:
    """``(pixels, not white, reddish)`` of a PNG: is there a picture, and is the red best
    task in it."""
    width, height, rows = decode_png(data)
    channels = len(rows[0]) // width
    ink = red = 0
    for row in rows:
        for x in range(0, len(row), channels):
            r, g, b = row[x], row[x + 1], row[x + 2]
            if r < 235 or g < 235 or b < 235:
                ink += 1
            if r > 180 and g < 80 and b < 80:
                red += 1
    return width * height, ink, red
