"""The existing clients' code, from the SageMaker Mask R-CNN notebook (shared/reference/003_...txt).

Kept as the notebook has it, so tests prove that clients written for that notebook work unchanged.
"""

import numpy as np


def rle_to_binary_mask(rle, img_shape):
    value = 0
    mask_array = []
    for count in rle:
        mask_array.extend([int(value)] * count)
        value = (value + 1) % 2

    assert len(mask_array) == img_shape[0] * img_shape[1]
    b_mask = np.array(mask_array, dtype=np.uint8).reshape(img_shape)

    return b_mask
