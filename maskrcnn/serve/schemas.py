"""Request and response schemas of the prediction endpoints (also the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """The SageMaker notebook's body, plus optional thresholds and the RLE flavour."""

    model_config = ConfigDict(extra="ignore")

    img_id: Union[Annotated[str, Field(max_length=512)], int] = Field(description="caller's image id (echoed in logs)")
    img_data: str = Field(description="base64 of the encoded image file (JPEG, PNG, BMP or GIF)")
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="drop detections scoring below this")
    mask_threshold: float = Field(0.5, ge=0.0, lt=1.0, description="mask probability above which a pixel is in")
    rle: Literal["row", "coco"] = Field(
        "row", description="row: uncompressed row-major counts (notebook); coco: pycocotools compressed RLE"
    )


class Segmentation(BaseModel):
    counts: Union[list[int], str]
    size: list[int] = Field(description="[height, width]", min_length=2, max_length=2)


class Annotation(BaseModel):
    bbox: list[float] = Field(description="[x, y, width, height] in pixels", min_length=4, max_length=4)
    score: float
    category_id: int = Field(description="COCO category id")
    category_name: str
    segmentation: Segmentation


class PredictResponse(BaseModel):
    annotations: list[Annotation]


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong and what to do")
