"""segzoo: a reproducible pipeline to train, compare and report 3D medical image segmentation models."""

__version__ = "0.1.0"
