"""SmallObjectCopyPaste: the paper's rules checked on every pasted object, on the embedded data and coco-mini.

Rules (Kisantal et al., section 4): no pasted mask overlaps an original or another pasted mask; every pasted
mask stays at least 5 px inside the image; originals survive unchanged (annotations, and their pixels);
boxes are the masks' tight boxes and areas their pixel counts; only small, non-crowd, one-piece objects are
copied; a paste with no room is skipped and counted, never forced.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sodlib.augment import (
    CopyPasteSettings,
    PasteCounts,
    SmallObjectCopyPaste,
    copy_paste_small_objects,
    count_connected_pieces,
    mask_box,
)
from sodlib.data import CocoDetection, embedded_dataset


@pytest.fixture(scope="module")
def embedded_items() -> list[tuple[torch.Tensor, dict]]:
    annotations, images = embedded_dataset("train")
    dataset = CocoDetection(annotations, images, masks=True, image_ids=list(range(1, 25)))
    return [dataset[i] for i in range(len(dataset))]


def assert_paste_rules(image: torch.Tensor, target: dict, out_image: torch.Tensor, out_target: dict,
                       sources: np.ndarray, margin: int = 5, overlap_allowed: bool = False, blurred: bool = False) -> None:
    """Every rule of a paste, for one image (the docstring of this module)."""
    n = len(target["labels"])
    p = len(out_target["labels"]) - n
    assert p == len(sources)
    for key in ("boxes", "labels", "masks", "area", "iscrowd"):
        assert torch.equal(out_target[key][:n], target[key]), key
        assert len(out_target[key]) == n + p
    assert out_target["image_id"] == target["image_id"]
    masks = out_target["masks"].numpy().astype(bool)
    height, width = masks.shape[1:]
    originals = masks[:n].any(axis=0) if n else np.zeros((height, width), dtype=bool)
    pasted_union = np.zeros((height, width), dtype=bool)
    for row in range(n, n + p):
        mask = masks[row]
        box = mask_box(mask)
        assert box is not None
        assert out_target["boxes"][row].tolist() == list(box)
        assert out_target["area"][row].item() == mask.sum()
        assert out_target["iscrowd"][row].item() == 0
        source = int(sources[row - n])
        assert out_target["labels"][row] == target["labels"][source]
        assert target["iscrowd"][source] == 0 and target["area"][source] <= 1024
        assert count_connected_pieces(target["masks"][source].numpy()) == 1
        x1, y1, x2, y2 = box
        assert x1 >= margin and y1 >= margin and x2 <= width - margin and y2 <= height - margin
        if not overlap_allowed:
            assert not (mask & originals).any(), "a pasted object overlaps an original one"
            assert not (mask & pasted_union).any(), "two pasted objects overlap"
        pasted_union |= mask
    changed = (out_image != image).any(dim=0).numpy()
    if not overlap_allowed:
        assert not (changed & originals).any(), "pixels of an original object changed"
    if not blurred:
        assert not (changed & ~pasted_union).any(), "pixels outside the pasted masks changed"


@pytest.mark.parametrize("strategy, count", [("one", 3), ("several", 3), ("all", 1), ("all", 3)])
def test_rules_hold_on_the_embedded_data(embedded_items, strategy, count):
    transform = SmallObjectCopyPaste(strategy, count, seed=11)
    for image, target in embedded_items:
        out_image, out_target = transform(image, target)
        assert_paste_rules(image, target, out_image, out_target, transform.last_sources)
    counts = transform.counts
    assert counts.pasted > 0
    assert counts.pasted + counts.skipped_no_room + counts.skipped_vanished == counts.planned_pastes
    assert counts.images == len(embedded_items)


def test_strategies_pick_their_sources(embedded_items):
    rng = np.random.default_rng(0)
    for image, target in embedded_items[:12]:
        eligible = [i for i in range(len(target["labels"])) if target["area"][i] <= 1024 and target["iscrowd"][i] == 0
                    and count_connected_pieces(target["masks"][i].numpy()) == 1]
        one = copy_paste_small_objects(image, target, rng, CopyPasteSettings("one", 4))
        several = copy_paste_small_objects(image, target, rng, CopyPasteSettings("several", 2))
        every = copy_paste_small_objects(image, target, rng, CopyPasteSettings("all", 2))
        assert one.counts.planned_pastes == (4 if eligible else 0) and len(set(one.sources.tolist())) <= 1
        assert several.counts.planned_pastes == min(2, len(eligible))
        assert len(set(several.sources.tolist())) == len(several.sources)
        assert every.counts.planned_pastes == 2 * len(eligible)
        if every.counts.pasted == every.counts.planned_pastes:
            assert sorted(every.sources.tolist()) == sorted(eligible * 2)
        for result in (one, several, every):
            assert set(result.sources.tolist()) <= set(eligible)


def test_scale_and_rotation_stay_in_the_papers_ranges(embedded_items):
    transform = SmallObjectCopyPaste("all", 2, seed=5)
    ratios = []
    for image, target in embedded_items:
        _, out_target = transform(image, target)
        n = len(target["labels"])
        for row, source in enumerate(transform.last_sources, start=n):
            if target["area"][source] >= 150:
                ratios.append(float(out_target["area"][row] / target["area"][source]))
    ratios = np.array(ratios)
    # side scale in [0.8, 1.2] gives area ratios in [0.64, 1.44], blurred a little by rasterisation
    assert len(ratios) > 20 and ratios.min() > 0.55 and ratios.max() < 1.6
    assert ratios.min() < 0.8 and ratios.max() > 1.2  # the whole range is used


def test_crowd_and_split_masks_are_never_copied():
    image = torch.rand(3, 64, 64)
    masks = torch.zeros(3, 64, 64, dtype=torch.uint8)
    masks[0, 10:14, 10:14] = 1                               # a crowd region
    masks[1, 30:33, 30:33] = 1
    masks[1, 40:43, 40:43] = 1                               # two pieces: occluded
    masks[2, 50:55, 20:25] = 1                               # copyable
    target = {"boxes": torch.tensor([[10, 10, 14, 14], [30, 30, 43, 43], [20, 50, 25, 55]], dtype=torch.float32),
              "labels": torch.tensor([1, 2, 3]), "area": torch.tensor([16.0, 18.0, 25.0]),
              "iscrowd": torch.tensor([1, 0, 0]), "masks": masks, "image_id": 4}
    result = copy_paste_small_objects(image, target, np.random.default_rng(0), CopyPasteSettings("all", 5))
    assert set(result.sources.tolist()) == {2}
    assert result.counts.small_objects == 2 and result.counts.split_masks == 1
    assert_paste_rules(image, target, result.image, result.target, result.sources)


def _one_hole_scene(hole: int) -> tuple[torch.Tensor, dict]:
    """A 64 px image taken by a large object everywhere except a ``hole`` px square and a 6 px small object."""
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    small = torch.zeros(64, 64, dtype=torch.uint8)
    small[45:51, 45:51] = 1
    large = 1 - small
    large[20:20 + hole, 20:20 + hole] = 0
    masks = torch.stack([large, small])
    target = {"boxes": torch.tensor([[0, 0, 64, 64], [45, 45, 51, 51]], dtype=torch.float32),
              "labels": torch.tensor([1, 2]), "area": masks.flatten(1).sum(1).float(),
              "iscrowd": torch.tensor([0, 0]), "masks": masks, "image_id": 1}
    return image, target


def test_the_exact_search_finds_the_only_free_place():
    image, target = _one_hole_scene(hole=14)
    settings = CopyPasteSettings("one", 1, placement_tries=0)  # straight to the exhaustive search
    for seed in range(10):
        result = copy_paste_small_objects(image, target, np.random.default_rng(seed), settings)
        assert result.counts.pasted == 1
        x1, y1, x2, y2 = result.target["boxes"][2].tolist()
        assert 20 <= x1 and x2 <= 34 and 20 <= y1 and y2 <= 34
        assert_paste_rules(image, target, result.image, result.target, result.sources)


def test_no_room_means_skipped_and_counted_never_forced():
    image, target = _one_hole_scene(hole=3)
    result = copy_paste_small_objects(image, target, np.random.default_rng(0), CopyPasteSettings("one", 4))
    assert result.counts.planned_pastes == 4 and result.counts.skipped_no_room == 4 and result.counts.pasted == 0
    assert torch.equal(result.image, image)
    assert all(torch.equal(result.target[k], target[k]) for k in ("boxes", "labels", "masks", "area", "iscrowd"))


def test_the_border_margin_is_kept_even_when_only_the_border_is_free():
    image = torch.rand(3, 40, 40)
    masks = torch.zeros(2, 40, 40, dtype=torch.uint8)
    masks[0, 8:32, 8:32] = 1       # a large object in the middle: only a ring of 8 px is free
    masks[1, 15:19, 15:19] = 0      # (no pixel for object 1 here; give it its own place inside object 0's hole)
    masks[0, 14:20, 14:20] = 0
    masks[1, 15:19, 15:19] = 1
    target = {"boxes": torch.tensor([[8, 8, 32, 32], [15, 15, 19, 19]], dtype=torch.float32),
              "labels": torch.tensor([1, 2]), "area": masks.flatten(1).sum(1).float(),
              "iscrowd": torch.tensor([0, 0]), "masks": masks, "image_id": 1}
    for margin in (5, 8):
        settings = CopyPasteSettings("one", 6, border_margin=margin)
        result = copy_paste_small_objects(image, target, np.random.default_rng(margin), settings)
        assert_paste_rules(image, target, result.image, result.target, result.sources, margin=margin)
        if margin == 8:
            assert result.counts.pasted == 0 and result.counts.skipped_no_room == 6
        else:
            assert result.counts.pasted > 0


def test_overlap_allowed_pastes_into_a_full_image():
    image, target = _one_hole_scene(hole=3)
    settings = CopyPasteSettings("one", 4, allow_overlap=True)
    result = copy_paste_small_objects(image, target, np.random.default_rng(0), settings)
    assert result.counts.pasted == 4
    assert_paste_rules(image, target, result.image, result.target, result.sources, overlap_allowed=True)


def test_edge_blur_changes_only_a_thin_band_and_never_the_originals(embedded_items):
    rng_plain, rng_blur = np.random.default_rng(9), np.random.default_rng(9)
    for image, target in embedded_items[:8]:
        plain = copy_paste_small_objects(image, target, rng_plain, CopyPasteSettings("all", 1))
        blurred = copy_paste_small_objects(image, target, rng_blur, CopyPasteSettings("all", 1, edge_blur=5))
        for key in ("boxes", "masks", "labels", "area"):
            assert torch.equal(plain.target[key], blurred.target[key])  # same draws, same places
        assert_paste_rules(image, target, blurred.image, blurred.target, blurred.sources, blurred=True)
        if plain.counts.pasted:
            differs = (plain.image != blurred.image).any(dim=0).numpy()
            pasted = blurred.target["masks"][len(target["labels"]):].numpy().any(axis=0)
            near = np.zeros_like(pasted)
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    near |= np.roll(np.roll(pasted, dy, 0), dx, 1)
            assert differs.any() and not (differs & ~near).any()


def test_image_dtype_and_range_are_kept():
    image, target = _one_hole_scene(hole=14)
    as_bytes = (image * 255).round().to(torch.uint8)
    result = copy_paste_small_objects(as_bytes, target, np.random.default_rng(1), CopyPasteSettings("one", 1))
    assert result.image.dtype == torch.uint8 and result.counts.pasted == 1
    result = copy_paste_small_objects(image.double(), target, np.random.default_rng(1), CopyPasteSettings("one", 1))
    assert result.image.dtype == torch.float64 and 0 <= result.image.min() and result.image.max() <= 1


def test_inputs_are_not_modified(embedded_items):
    image, target = embedded_items[0]
    image_before, masks_before = image.clone(), target["masks"].clone()
    SmallObjectCopyPaste("all", 3, seed=0)(image, target)
    assert torch.equal(image, image_before) and torch.equal(target["masks"], masks_before)


# ---------------------------------------------------------------------------------------------- randomness

def _run(transform: SmallObjectCopyPaste, items) -> list[torch.Tensor]:
    return [transform(image, target)[1]["boxes"] for image, target in items]


def test_same_seed_same_output_and_generators_work(embedded_items):
    items = embedded_items[:4]
    first, again = _run(SmallObjectCopyPaste("all", 2, seed=3), items), _run(SmallObjectCopyPaste("all", 2, seed=3), items)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = _run(SmallObjectCopyPaste("all", 2, seed=4), items)
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    numpy_runs = [_run(SmallObjectCopyPaste("all", 2, generator=np.random.default_rng(8)), items) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*numpy_runs))
    torch_runs = [_run(SmallObjectCopyPaste("all", 2, generator=torch.Generator().manual_seed(8)), items) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*torch_runs))
    torch.manual_seed(1)
    global_first = _run(SmallObjectCopyPaste("all", 2), items)
    torch.manual_seed(1)
    global_again = _run(SmallObjectCopyPaste("all", 2), items)
    assert all(torch.equal(a, b) for a, b in zip(global_first, global_again))


def test_probability_sets_the_share_of_augmented_images():
    image, target = _one_hole_scene(hole=14)
    never = SmallObjectCopyPaste("one", 1, probability=0.0, seed=0)
    assert never(image, target)[1] is target and never.counts == PasteCounts(images=1)
    half = SmallObjectCopyPaste("one", 1, probability=0.5, seed=0)
    for _ in range(400):
        half(image, target)
    assert half.counts.images == 400 and 160 <= half.counts.images_augmented <= 240


def test_masks_can_be_dropped_after_pasting_for_box_only_detectors():
    image, target = _one_hole_scene(hole=14)
    for probability in (0.0, 1.0):
        out_image, out_target = SmallObjectCopyPaste("one", 1, probability=probability, return_masks=False,
                                                     seed=0)(image, target)
        assert "masks" not in out_target and "masks" in target
        assert len(out_target["boxes"]) == 2 + int(probability == 1.0)


def test_works_inside_a_dataset_and_dataloader_workers_draw_differently():
    annotations, images = embedded_dataset("train")
    transform = SmallObjectCopyPaste("all", 1, seed=2)
    dataset = CocoDetection(annotations, images, masks=True, image_ids=[3, 3, 3, 3], transforms=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=lambda batch: batch[0])
    torch.manual_seed(0)
    boxes = [target["boxes"] for _, target in loader]
    assert len(boxes) == 4 and not torch.equal(boxes[0], boxes[1])  # items 0 and 1 come from different workers


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("arguments, message", [
    ({"strategy": "some"}, "strategy='some' is unknown"),
    ({"count": 0}, "count=0 must be an integer >= 1"),
    ({"count": 1.5}, "count=1.5"),
    ({"scale_range": (1.2, 0.8)}, "0 < low <= high"),
    ({"scale_range": "big"}, "scale_range='big'"),
    ({"max_rotation_degrees": -1}, "max_rotation_degrees=-1"),
    ({"border_margin": -2}, "border_margin=-2"),
    ({"edge_blur": 4}, "edge_blur=4 must be None"),
    ({"probability": 1.5}, "probability=1.5"),
    ({"seed": 1, "generator": np.random.default_rng(0)}, "either seed or generator"),
    ({"generator": 3}, "generator must be"),
    ({"seed": -1}, "seed=-1"),
    ({"return_masks": "no"}, "return_masks='no'"),
])
def test_bad_arguments_are_refused_at_construction(arguments, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SmallObjectCopyPaste(**arguments)


def test_a_target_without_masks_says_how_to_get_them():
    image, target = _one_hole_scene(hole=14)
    del target["masks"]
    with pytest.raises(ValueError, match=r"masks=True"):
        SmallObjectCopyPaste(seed=0)(image, target)


def test_malformed_targets_are_refused():
    image, target = _one_hole_scene(hole=14)
    with pytest.raises(ValueError, match="Tensor\\[C, H, W\\]"):
        SmallObjectCopyPaste(seed=0)(image[None], target)
    with pytest.raises(ValueError, match="matching the image"):
        SmallObjectCopyPaste(seed=0)(image[:, :32], target)
    with pytest.raises(ValueError, match="target\\['labels'\\] has shape"):
        SmallObjectCopyPaste(seed=0)(image, {**target, "labels": target["labels"][:1]})


# ---------------------------------------------------------------------------------------------- coco-mini

@pytest.mark.coco_mini
def test_rules_hold_on_coco_mini(coco_mini):
    annotations, images = coco_mini
    probe = CocoDetection(annotations, images)
    with_small = [image_id for index, image_id in enumerate(probe.image_ids)
                  if any(a["area"] <= 1024 and not a.get("iscrowd", 0) for a in probe.annotations_of(index))]
    dataset = CocoDetection(probe.coco, images, masks=True, image_ids=with_small[:10])
    transform = SmallObjectCopyPaste("all", 2, seed=0)
    for index in range(len(dataset)):
        image, target = dataset[index]
        out_image, out_target = transform(image, target)
        # COCO's own masks may overlap each other; the rules are about what is pasted
        assert_paste_rules(image, target, out_image, out_target, transform.last_sources)
    assert transform.counts.pasted > 0 and transform.counts.split_masks > 0
