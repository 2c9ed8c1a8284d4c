"""Adapters to the tools practitioners already run beside sodlib.

- :mod:`sodlib.integrations.sahi`: sodlib's detectors under SAHI's sliced inference (``pip install sodlib[slicing]``).
- :mod:`sodlib.integrations.capstone`: ``python -m sodlib experiment capstone``, every technique of the course
  with and without slicing on the embedded large-image data.
- :mod:`sodlib.integrations.commands`: ``python -m sodlib predict``.

Nothing here is imported by ``import sodlib``: each module needs its optional package only when used.
"""
