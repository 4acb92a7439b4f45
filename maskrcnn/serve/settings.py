"""Limits and tuning of the server (``maskrcnn serve`` flags map onto these fields)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 32 * 1024 * 1024      # request body (base64 inflates the image by 4/3)
    max_image_bytes: int = 20 * 1024 * 1024     # decoded image file
    max_image_pixels: int = 40_000_000          # width x height (a 4K frame is 8.3 M)
    max_in_flight: int = 64                     # prediction requests admitted at once; more get 503
    max_batch_size: int = 1                     # > 1 turns dynamic batching on
    max_batch_wait_ms: float = 5.0              # how long a batch's first request waits for others
    model_workers: int = 1                      # concurrent model calls
    request_timeout_s: float = 60.0             # a request waiting longer gets 504
    retry_after_s: int = 1                      # Retry-After of a 503

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_bytes", "max_image_pixels", "max_in_flight", "max_batch_size",
                     "model_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_batch_wait_ms < 0 or self.request_timeout_s <= 0:
            raise ValueError("max_batch_wait_ms must be >= 0 and request_timeout_s > 0")
