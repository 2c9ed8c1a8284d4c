"""COCO data: reading and validation, size bins and size mixes, torch Datasets, the embedded synthetic datasets
(COCO-like, tiny-object and large-image), and the small helpers every layer above shares (atomic json writes, a mask's box)."""
from sodlib.data.coco import CocoFormatError, load_coco, validate_coco
from sodlib.data.dataset import CocoDetection, detection_collate, read_image
from sodlib.data.files import write_json_atomically, write_text_atomically
from sodlib.data.masks import mask_box
from sodlib.data.paths import coco_mini_dir, coco_root, data_dir
from sodlib.data.sizes import (SIZE_BINS, TT100K_SIZE_MIX, annotation_areas, count_by_size_bin, in_size_bin,
                               size_bin_label, size_mix_report)
from sodlib.data.synthetic import (COCO_LIKE_MIX, LARGE_MIX, TINY_MIX, SizeMix, embedded_dataset, embedded_large_dataset,
                                   embedded_tiny_dataset, generate_annotation_only_coco, generate_synthetic_coco)

__all__ = [
    "COCO_LIKE_MIX",
    "LARGE_MIX",
    "SIZE_BINS",
    "TINY_MIX",
    "TT100K_SIZE_MIX",
    "CocoDetection",
    "CocoFormatError",
    "SizeMix",
    "annotation_areas",
    "coco_mini_dir",
    "coco_root",
    "count_by_size_bin",
    "data_dir",
    "detection_collate",
    "embedded_dataset",
    "embedded_large_dataset",
    "embedded_tiny_dataset",
    "generate_annotation_only_coco",
    "generate_synthetic_coco",
    "in_size_bin",
    "load_coco",
    "mask_box",
    "read_image",
    "size_bin_label",
    "size_mix_report",
    "validate_coco",
    "write_json_atomically",
    "write_text_atomically",
]
