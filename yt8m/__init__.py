"""yt8m: the YouTube-8M WILLOW video classification system on PyTorch."""

__version__ = "0.1.0"
