"""COCO data: reading and validation, size bins, torch Datasets, the embedded synthetic dataset, and the small
helpers every layer above shares (atomic json writes, a mask's box)."""
from sodlib.data.coco import CocoFormatError, load_coco, validate_coco
from sodlib.data.dataset import CocoDetection, detection_collate, read_image
from sodlib.data.files import write_json_atomically, write_text_atomically
from sodlib.data.masks import mask_box
from sodlib.data.paths import coco_mini_dir, coco_root, data_dir
from sodlib.data.sizes import SIZE_BINS, annotation_areas, count_by_size_bin, in_size_bin, size_bin_label
from sodlib.data.synthetic import embedded_dataset, generate_annotation_only_coco, generate_synthetic_coco

__all__ = [
    "SIZE_BINS",
    "CocoDetection",
    "CocoFormatError",
    "annotation_areas",
    "coco_mini_dir",
    "coco_root",
    "count_by_size_bin",
    "data_dir",
    "detection_collate",
    "embedded_dataset",
    "generate_annotation_only_coco",
    "generate_synthetic_coco",
    "in_size_bin",
    "load_coco",
    "mask_box",
    "read_image",
    "size_bin_label",
    "validate_coco",
    "write_json_atomically",
    "write_text_atomically",
]
