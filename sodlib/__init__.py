"""sodlib: small-object detection, the library behind the course.

Subpackages (importable without Jupyter), from the bottom layer up; each imports only from the layers below it
(``tests/test_import_layers.py`` holds them to that):

- ``sodlib.data``: COCO reading and validation, size bins, torch Datasets, the embedded synthetic dataset;
  ``sodlib.tables``: plain-text tables.
- ``sodlib.anchors``: anchor generation, IoU, matching, the closed-form anchor geometry;
  ``sodlib.ops``: RoI pooling ops (the compiled PrRoI extension, its pure-PyTorch reference, torchvision's).
- ``sodlib.stats``: size-bin and anchor-matching statistics; ``sodlib.augment``: oversampling, copy-paste, flips.
- ``sodlib.models``: the model registry and the detectors.
- ``sodlib.eval``: COCO AP / AR per size bin, error analysis.
- ``sodlib.viz``: matplotlib figures and the notebooks' widgets (draws what it is given; no evaluation, no
  training).
- ``sodlib.engine``: training, checkpoints, run folders, experiments; ``sodlib.bench``: benchmarks.
- ``sodlib.cli``: ``python -m sodlib ...``, which wires the ``commands`` modules of the packages together.

Conventions: boxes are float tensors ``[N, 4]`` in absolute pixels ``(x1, y1, x2, y2)``; COCO's
``[x, y, w, h]`` appears only at the json boundary. Images are ``float32 [3, H, W]`` in ``[0, 1]``.
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
