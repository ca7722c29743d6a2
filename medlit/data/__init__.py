"""Data: the sample structures, the data-set registry and the embedded data sets."""

from medlit.data import embedded  # noqa: F401  (registers the embedded data sets)
from medlit.data.registry import DATASETS, load_dataset, register_dataset
from medlit.data.sample import BOX_FIELDS, Sample, SampleSet, boxes_to_mask, mask_to_box, masks_to_boxes

__all__ = ["BOX_FIELDS", "DATASETS", "Sample", "SampleSet", "boxes_to_mask", "load_dataset", "mask_to_box",
           "masks_to_boxes", "register_dataset"]
