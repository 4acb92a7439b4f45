"""Checks on an uploaded image before it reaches the model: format, size, decodability."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

# What the serving graph's tf.io.decode_image reads.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF")


class ImageRejected(ValueError):
    """An image the server will not run; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """``(height, width)`` of an encoded image, or ImageRejected (400 unreadable, 413 too large)."""
    with warnings.catch_warnings():
        # Pillow's own bomb check would warn or raise at its limit; ours is explicit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in SUPPORTED_FORMATS:
                    raise ImageRejected(400, f"img_data is a {img.format} image; send one of {', '.join(SUPPORTED_FORMATS)}")
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageRejected(413, f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
                img.load()  # a truncated or corrupt file fails here, not inside the model
        except ImageRejected:
            raise
        except Image.DecompressionBombError as e:
            raise ImageRejected(413, f"image is over the pixel limit ({e})") from None
        except UnidentifiedImageError:
            raise ImageRejected(400, "img_data does not decode to an image file (JPEG, PNG, BMP or GIF)") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageRejected(400, f"img_data is a damaged image file ({e})") from None
    return height, width
