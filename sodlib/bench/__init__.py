"""Benchmarks: timings that are only read as ratios measured in the same run (ours against a reference and
against torchvision), never as absolute numbers or in tests.

- :mod:`sodlib.bench.prroi`: PrRoI / PS-PrRoI pooling against the pure-PyTorch reference and torchvision's
  ``roi_align`` / ``ps_roi_align``, cold and warm (``python -m sodlib bench prroi``).
- :mod:`sodlib.bench.rfcn`: R-FCN's inference against Faster R-CNN's with the same backbone, and its training
  step with each pooling (``python -m sodlib bench rfcn``).

The benchmark scripts in ``scripts/`` time the data tools and the training loop the same way.
"""
