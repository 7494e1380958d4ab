"""Deploying a model and looking inside it.

- :mod:`swinkit.deploy.export`: ONNX and torch.export (``.pt2``) files, checked against PyTorch.
- :mod:`swinkit.deploy.info`: parameters, multiply-adds per stage, activation memory, output shapes (meta device).
- :mod:`swinkit.deploy.visualize`: window partitions, attention maps and Grad-CAM as PNG figures
  (inputs read by :mod:`swinkit.deploy.media`, window geometry in :mod:`swinkit.deploy.geometry`).

The submodules are imported on use, so that ``info`` never loads matplotlib or onnxruntime.
"""
