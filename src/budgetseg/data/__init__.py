"""Datasets: one in-memory sample type, readers for VOC / SBD / COCO, and the built-in fashion-scenes."""

from budgetseg.data.sample import IGNORE, Sample, SegDataset

__all__ = ["IGNORE", "Sample", "SegDataset"]
