"""sodlib: small-object detection, the library behind the course.

Subpackages (importable without Jupyter):

- ``sodlib.data``: COCO reading and validation, size bins, torch Datasets, the embedded synthetic dataset.
- ``sodlib.viz``: matplotlib figures used by the notebooks.

Conventions: boxes are float tensors ``[N, 4]`` in absolute pixels ``(x1, y1, x2, y2)``; COCO's
``[x, y, w, h]`` appears only at the json boundary. Images are ``float32 [3, H, W]`` in ``[0, 1]``.
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
