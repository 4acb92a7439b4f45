"""COCO evaluation (box and mask AP) and reports: ``run_evaluation(*, model_dir, data, annotations, out_dir)``."""


def __getattr__(name: str):
    # Lazy, so that `maskrcnn --help` does not import the evaluation stack.
    if name == "run_evaluation":
        from maskrcnn.evaluate.run import run_evaluation

        return run_evaluation
    raise AttributeError(name)
