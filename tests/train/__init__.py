# Sample every anchor and every proposal of the tiny preset, so that the model's random fg/bg
# sampling only permutes its choices: two computations on the same batch then agree to float
# rounding (resume and distributed tests compare runs step for step).
DETERMINISTIC_SAMPLING = (
    "RPN.BATCH_PER_IMAGE=10000", "RPN.FG_RATIO=1.0",  # >= the 9207 anchors of a 192x192 image
    "RPN.TRAIN_POST_NMS_TOPK=32", "FRCNN.BATCH_PER_IMAGE=48", "FRCNN.FG_RATIO=1.0",  # 32 proposals + 16 gt
)
