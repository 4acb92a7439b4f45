"""KFP v2 components: one lightweight Python component per pipeline step.

Each body only maps its artifacts and parameters onto ``maskrcnn.pipeline`` step functions, which
wrap the library's stages; imports stay inside the bodies so the components are hermetic. Base
images come from ``maskrcnn.images`` and carry kfp (``install_kfp_package=False``), so a step
installs nothing at run time.
"""

from components.convert import convert
from components.deploy import deploy
from components.download import download
from components.evaluate import evaluate
from components.train import train

__all__ = ["download", "convert", "train", "evaluate", "deploy"]
