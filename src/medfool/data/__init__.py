"""Data layer: every loader returns float32 NCHW in [0, 1], int64 labels and class names."""

from medfool.data.dataset import Dataset, DatasetInfo, Split
from medfool.data.registry import list_datasets, load_dataset
from medfool.data.synthetic import make_synthetic

__all__ = ["Dataset", "DatasetInfo", "Split", "list_datasets", "load_dataset", "make_synthetic"]
