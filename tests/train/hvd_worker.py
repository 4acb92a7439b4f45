"""Run by ``horovodrun --gloo -np 2`` from test_distributed.py (not a test module itself).

Each rank trains the real tiny model for a few steps through ``run_training`` and records the
checksum of its final weights, then checks Horovod's gradient averaging on the real model:
``DistributedGradientTape`` on this rank's batch against a single-process gradient over the
concatenated batch (both ranks' batches) with the same per-replica loss normalization.
Writes ``OUT/rank{r}.json``.

usage: hvd_worker.py SHARDS_DIR MODEL_DIR OUT_DIR KEY=VALUE...
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from maskrcnn.config import get_config
from maskrcnn.data.pipeline import build_dataset
from maskrcnn.model.mask_rcnn import MaskRCNN
from maskrcnn.train.distributed import init_replica, tf_variables
from maskrcnn.train.loop import config_for_data, resolve_shards_dir, run_training
from maskrcnn.utils.io import read_json


def main(shards_dir: str, model_dir: str, out_dir: str, *overrides: str) -> None:
    cfg = get_config("tiny", list(overrides))
    summary = run_training(cfg, shards_dir, model_dir, export=False)
    replica = init_replica()  # the same replica run_training used (hvd.init is idempotent)

    shards = resolve_shards_dir(shards_dir)
    cfg = config_for_data(cfg, read_json(shards / "manifest.json"))
    batches = [next(iter(build_dataset(shards, cfg, training=True, rank=r, world_size=replica.size, deterministic=True)))
               for r in range(replica.size)]
    model = MaskRCNN(cfg)
    model.compute_losses(batches[0], training=True)
    replica.broadcast_from_chief(model.variables)
    variables = tf_variables(model.trainable_variables)

    with tf.GradientTape() as tape:
        loss = model.compute_losses(batches[replica.rank], training=True)["total_loss"]
    distributed = replica.gradient_tape(tape).gradient(loss, variables)

    concatenated = {k: tf.concat([b[k] for b in batches], axis=0) for k in batches[0]}
    per_replica = cfg.TRAIN.BATCH_PER_GPU
    with tf.GradientTape() as tape:
        chunks = [{k: v[i * per_replica:(i + 1) * per_replica] for k, v in concatenated.items()}
                  for i in range(replica.size)]
        loss = tf.add_n([model.compute_losses(c, training=True)["total_loss"] for c in chunks]) / replica.size
    single = tape.gradient(loss, variables)

    with tf.GradientTape() as tape:
        loss = model.compute_losses(chunks[replica.rank], training=True)["total_loss"]
    local = tape.gradient(loss, variables)

    diffs = [float(np.max(np.abs(d.numpy() - s.numpy()))) for d, s in zip(distributed, single) if d is not None]
    scales = [float(np.max(np.abs(s.numpy()))) for d, s in zip(distributed, single) if d is not None]
    local_diffs = [float(np.max(np.abs(d.numpy() - g.numpy()))) for d, g in zip(distributed, local) if d is not None]
    result = {
        "rank": replica.rank,
        "size": replica.size,
        "summary": {k: summary[k] for k in ("steps", "world_size", "global_batch", "variables_checksum")},
        "max_grad_diff": max(diffs),
        "max_grad": max(scales),
        "num_grads": len(diffs),
        "max_local_vs_averaged_diff": max(local_diffs),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rank{replica.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
