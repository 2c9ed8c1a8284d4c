"""Data augmentation for small objects, after Kisantal et al. (2019): size-aware oversampling and
small-object copy-paste, online (a sampler, a transform) and offline (a written COCO dataset); and the seeded
horizontal flip of training."""
from sodlib.augment.copy_paste import (
    STRATEGIES,
    CopyPasteResult,
    CopyPasteSettings,
    PasteCounts,
    SmallObjectCopyPaste,
    copy_paste_small_objects,
)
from sodlib.augment.flip import HorizontalFlipView
from sodlib.augment.masks import SMALL_AREA_MAX, count_connected_pieces, is_small_object
from sodlib.augment.offline import OfflineCopyPasteResult, copy_paste_coco
from sodlib.augment.oversampling import (
    OversampledDataset,
    SmallObjectOversampler,
    images_with_small_objects,
    oversample_coco,
    small_object_flags,
    write_oversampled_coco,
)
from sodlib.data.masks import mask_box

__all__ = [
    "SMALL_AREA_MAX",
    "STRATEGIES",
    "CopyPasteResult",
    "CopyPasteSettings",
    "HorizontalFlipView",
    "OfflineCopyPasteResult",
    "OversampledDataset",
    "PasteCounts",
    "SmallObjectCopyPaste",
    "SmallObjectOversampler",
    "copy_paste_coco",
    "copy_paste_small_objects",
    "count_connected_pieces",
    "images_with_small_objects",
    "is_small_object",
    "mask_box",
    "oversample_coco",
    "small_object_flags",
    "write_oversampled_coco",
]
