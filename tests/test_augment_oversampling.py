"""Size-aware oversampling: the sampler's observed repeat rate is its factor; the offline json round-trips."""
from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from sodlib.augment import SmallObjectOversampler, oversample_coco, small_object_flags, write_oversampled_coco
from sodlib.data import CocoDetection, embedded_dataset, load_coco
from tests.conftest import assert_refused, file_digests


@pytest.fixture(scope="module")
def embedded_train() -> CocoDetection:
    annotations, images = embedded_dataset("train")
    return CocoDetection(annotations, images)


def expected_flags(dataset: CocoDetection) -> np.ndarray:
    return np.array([any(a["area"] <= 32**2 and not a.get("iscrowd", 0) for a in dataset.annotations_of(i))
                     for i in range(len(dataset))])


def test_flags_follow_the_small_bin_of_non_crowd_objects(embedded_train, tiny_coco_files):
    flags = small_object_flags(embedded_train)
    assert np.array_equal(flags, expected_flags(embedded_train))
    assert 0 < flags.sum() < len(flags)
    # tiny_coco: image 1 holds areas 200 and 1024 (small, the edge is inclusive); image 7 a crowd of 8 and 600
    tiny = CocoDetection(*tiny_coco_files)
    assert small_object_flags(tiny).tolist() == [True, True]
    subset = torch.utils.data.Subset(embedded_train, [5, 1, 5])
    assert small_object_flags(subset).tolist() == flags[[5, 1, 5]].tolist()
    both = torch.utils.data.ConcatDataset([tiny, subset])
    assert small_object_flags(both).tolist() == [True, True] + flags[[5, 1, 5]].tolist()


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_observed_repeat_rate_equals_the_factor(embedded_train, factor):
    sampler = SmallObjectOversampler(embedded_train, factor, seed=0)
    flags = sampler.has_small_objects
    seen = collections.Counter(iter(sampler))
    repeats = np.array([seen[i] for i in range(len(embedded_train))])
    assert len(sampler) == sum(seen.values()) == (~flags).sum() + factor * flags.sum()
    assert (repeats[flags] == factor).all() and (repeats[~flags] == 1).all()
    assert repeats[flags].mean() / repeats[~flags].mean() == factor


def test_a_fractional_factor_is_met_on_average(embedded_train):
    sampler = SmallObjectOversampler(embedded_train, 2.5, seed=1)
    flags = sampler.has_small_objects
    first = collections.Counter(iter(sampler))
    second = collections.Counter(iter(sampler))
    for seen in (first, second):
        repeats = np.array([seen[i] for i in range(len(embedded_train))])
        assert set(repeats[flags].tolist()) == {2, 3} and (repeats[~flags] == 1).all()
        assert abs(repeats[flags].mean() - 2.5) <= 1 / flags.sum()
        assert sum(seen.values()) == len(sampler)
    assert first != second  # the extra copies are drawn again each epoch


def test_shuffling_is_seeded_and_differs_between_epochs(embedded_train):
    flags = small_object_flags(embedded_train)
    a = SmallObjectOversampler(has_small_objects=flags, factor=3, seed=7)
    b = SmallObjectOversampler(has_small_objects=flags, factor=3, seed=7)
    epoch_a1, epoch_a2 = list(a), list(a)
    assert epoch_a1 == list(b) and epoch_a2 == list(b)
    assert epoch_a1 != epoch_a2 and sorted(epoch_a1) == sorted(epoch_a2)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert list(SmallObjectOversampler(has_small_objects=flags, factor=2, generator=g1)) == \
        list(SmallObjectOversampler(has_small_objects=flags, factor=2, generator=g2))
    torch.manual_seed(5)
    global_first = list(SmallObjectOversampler(has_small_objects=flags, factor=2))
    torch.manual_seed(5)
    assert list(SmallObjectOversampler(has_small_objects=flags, factor=2)) == global_first
    in_order = list(SmallObjectOversampler(has_small_objects=np.array([True, False, True]), factor=2, shuffle=False))
    assert in_order == [0, 0, 1, 2, 2]


def test_drives_a_dataloader(tiny_coco_files):
    dataset = CocoDetection(*tiny_coco_files)
    sampler = SmallObjectOversampler(dataset, 3, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=lambda batch: batch)
    ids = [target["image_id"] for batch in loader for _, target in batch]
    assert sorted(ids) == [1, 1, 1, 7, 7, 7]


@pytest.mark.parametrize("factor, message", [(0.5, "factor=0.5 is below 1"), (0, "below 1"), ("2", "must be a number"),
                                             (float("nan"), "must be a number"), (True, "must be a number")])
def test_bad_factors_are_refused(embedded_train, tiny_coco, tmp_path, factor, message):
    with pytest.raises(ValueError, match=message):
        SmallObjectOversampler(embedded_train, factor)
    with pytest.raises(ValueError, match=message):
        oversample_coco(tiny_coco, factor)
    with pytest.raises(ValueError, match=message):
        write_oversampled_coco(tmp_path / "in.json", tmp_path / "out.json", factor)
    assert not (tmp_path / "out.json").exists()


def test_bad_sampler_arguments_are_refused(embedded_train):
    with pytest.raises(ValueError, match="has_small_objects=\\[bool per item\\]"):
        SmallObjectOversampler(list(range(5)), 2)
    with pytest.raises(ValueError, match="pass the dataset"):
        SmallObjectOversampler(factor=2)
    with pytest.raises(ValueError, match="3 flags for a dataset of 800"):
        SmallObjectOversampler(embedded_train, 2, has_small_objects=[True, False, True])
    with pytest.raises(ValueError, match="either seed or generator"):
        SmallObjectOversampler(embedded_train, 2, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        SmallObjectOversampler(embedded_train, 2, generator=np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- offline

def test_offline_copies_keep_every_annotation(tiny_coco):
    tiny_coco["images"].append({"id": 20, "file_name": "c.png", "width": 10, "height": 10})  # no annotations
    before = json.dumps(tiny_coco)
    out = oversample_coco(tiny_coco, 3)
    assert json.dumps(tiny_coco) == before  # the input is not modified
    assert out["images"][:3] == tiny_coco["images"] and out["annotations"][:4] == tiny_coco["annotations"]
    copies = out["images"][3:]
    assert [c["oversampled_from"] for c in copies] == [1, 1, 7, 7]
    assert all(c["file_name"] == {1: "a.png", 7: "b.png"}[c["oversampled_from"]] for c in copies)
    assert len({i["id"] for i in out["images"]}) == len(out["images"])
    assert len({a["id"] for a in out["annotations"]}) == len(out["annotations"]) == 12
    by_image = collections.defaultdict(list)
    for annotation in out["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    for copy in copies:
        originals = by_image[copy["oversampled_from"]]
        duplicates = by_image[copy["id"]]
        strip = lambda a: {k: v for k, v in a.items() if k not in ("id", "image_id")}  # noqa: E731
        assert [strip(a) for a in duplicates] == [strip(a) for a in originals]


def test_offline_json_round_trips_through_pycocotools(embedded_train, tmp_path):
    annotations, _ = embedded_dataset("train")
    out, with_small, written = write_oversampled_coco(annotations, tmp_path / "over" / "train_3x.json", 3)
    flags = expected_flags(embedded_train)
    assert with_small == flags.sum() and written == len(flags) + 2 * flags.sum()
    coco = load_coco(out)
    plain = COCO(str(out))
    assert len(coco.imgs) == len(plain.imgs) == written
    source = load_coco(annotations)
    repeats = collections.Counter(image.get("oversampled_from", image["id"]) for image in coco.dataset["images"])
    assert all(repeats[image_id] == (3 if flag else 1) for image_id, flag in zip(embedded_train.image_ids, flags))
    assert len(coco.anns) == len(source.anns) + 2 * sum(len(source.imgToAnns[i]) for i, f in
                                                       zip(embedded_train.image_ids, flags) if f)
    assert [p.name for p in out.parent.iterdir()] == ["train_3x.json"]  # no temporary file left
    with pytest.raises(ValueError, match="already exists"):
        write_oversampled_coco(annotations, out, 2)
    write_oversampled_coco(annotations, out, 2, overwrite=True)
    assert len(load_coco(out).imgs) == len(flags) + flags.sum()
    with pytest.raises(ValueError, match="is the input"):
        write_oversampled_coco(out, out, 2, overwrite=True)


def test_oversampled_view_lists_small_object_items_factor_times(embedded_train, tiny_coco_files):
    from sodlib.augment import OversampledDataset

    view = OversampledDataset(embedded_train, 3)
    flags = expected_flags(embedded_train)
    assert len(view) == (~flags).sum() + 3 * flags.sum()
    assert np.array_equal(np.bincount(view.indices, minlength=len(flags)), np.where(flags, 3, 1))
    assert small_object_flags(view).sum() == 3 * flags.sum()
    tiny = CocoDetection(*tiny_coco_files)
    tiny_view = OversampledDataset(tiny, 2)
    assert [target["image_id"] for _, target in (tiny_view[i] for i in range(len(tiny_view)))] == [1, 1, 7, 7]
    half = OversampledDataset(embedded_train, 1.5, seed=2)
    assert len(half) == len(flags) + round(0.5 * flags.sum())
    with pytest.raises(ValueError, match="below 1"):
        OversampledDataset(embedded_train, 0.9)
    with pytest.raises(ValueError, match="one boolean per item"):
        OversampledDataset(embedded_train, 2, has_small_objects=[True])


@pytest.mark.parametrize("where, message", [
    ("input", "is the input"),
    ("symlink", "is the input"),                # a link to the input json
    ("dataset", "holds the input"),             # the folder holding the input json
    ("folder", "is a folder"),                  # a folder apart from the input: not a json path
])
def test_oversample_command_never_writes_over_its_input(tiny_coco_files, tmp_path, capsys, where, message):
    annotations, _ = tiny_coco_files
    (tmp_path / "link.json").symlink_to(annotations)
    (tmp_path / "elsewhere").mkdir()
    out = {"input": annotations, "symlink": tmp_path / "link.json", "dataset": annotations.parent,
           "folder": tmp_path / "elsewhere"}[where]
    before = file_digests(tmp_path)
    assert_refused(capsys, ["oversample", "--annotations", str(annotations), "--out", str(out), "--factor", "2",
                            "--overwrite"], message)
    assert file_digests(tmp_path) == before
