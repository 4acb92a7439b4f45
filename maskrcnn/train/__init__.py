"""Training: custom tf.function loop, Horovod or single process, checkpoint/resume, export."""
