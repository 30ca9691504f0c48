"""A window's frames side by side as one small JPEG.

A window's ``images/`` holds files that any reader shows as the cameras saw them (the pipeline links plain RGB or
grey images and writes decoded copies of anything else: video frames, EXIF-rotated or transparent images), so a
plain Pillow read is the right picture, and JPEGs can be decoded at reduced size (``draft``), which keeps large
frames cheap. Overlapping windows share frames, so each file is shrunk once per report (``ThumbnailCache``).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

THUMBNAIL_HEIGHT = 60  # px of one frame in the strip
GAP = 2
JPEG_QUALITY = 80
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ThumbnailCache:
    """Shrunk frames by file, each decoded once; a frame that cannot be read is None."""

    def __init__(self, height: int = THUMBNAIL_HEIGHT):
        self.height = height
        self._cache: dict[Path, Image.Image | None] = {}

    def get(self, path: Path) -> Image.Image | None:
        key = path.resolve()
        if key not in self._cache:
            self._cache[key] = self._shrink(key)
        return self._cache[key]

    def _shrink(self, path: Path) -> Image.Image | None:
        try:
            with Image.open(path) as image:
                width = max(1, round(image.width * self.height / image.height))
                image.draft("RGB", (2 * width, 2 * self.height))
                return image.convert("RGB").resize((width, self.height), Image.Resampling.BILINEAR, reducing_gap=2.0)
        except _READ_ERRORS:
            return None

    def strip(self, paths: list[Path]) -> bytes | None:
        """The frames left to right as a JPEG (a grey tile where a frame cannot be read); None without frames."""
        if not paths:
            return None
        tiles = [self.get(path) for path in paths]
        widths = [tile.width if tile is not None else round(self.height * 4 / 3) for tile in tiles]
        canvas = Image.new("RGB", (sum(widths) + GAP * (len(tiles) - 1), self.height), (255, 255, 255))
        x = 0
        for tile, width in zip(tiles, widths):
            canvas.paste(tile if tile is not None else Image.new("RGB", (width, self.height), (200, 200, 200)),
                         (x, 0))
            x += width + GAP
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        return buffer.getvalue()
