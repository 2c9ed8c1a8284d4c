"""Offline copy-paste and the commands: a valid COCO dataset written atomically, every rule kept in it."""
from __future__ import annotations

import collections
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sodlib.augment import CopyPasteSettings, copy_paste_coco, mask_box
from sodlib.cli import main
from sodlib.data import embedded_dataset, load_coco, read_image
from sodlib.data.coco import CocoFormatError
from tests.conftest import assert_refused, file_digests, interrupt_command


def write_subset(source: Path, out: Path, count: int, only_with_small: bool = False) -> Path:
    """The first ``count`` images of a COCO json (optionally only those with small objects) as a new json."""
    data = json.loads(Path(source).read_text())
    small = {a["image_id"] for a in data["annotations"] if a["area"] <= 1024 and not a.get("iscrowd", 0)}
    images = [i for i in data["images"] if not only_with_small or i["id"] in small][:count]
    keep = {i["id"] for i in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    out.write_text(json.dumps(data))
    return out


@pytest.fixture(scope="module")
def embedded_subset(tmp_path_factory) -> tuple[Path, Path]:
    annotations, images = embedded_dataset("train")
    return write_subset(annotations, tmp_path_factory.mktemp("subset") / "subset.json", 8), images


def masks_of(coco: COCO, image_id: int) -> tuple[list[dict], np.ndarray]:
    annotations = coco.imgToAnns[image_id]
    return annotations, np.stack([coco.annToMask(a) for a in annotations]).astype(bool)


def check_written_dataset(source: COCO, source_images: Path, out: Path, setting: str, margin: int = 5) -> collections.Counter:
    """The output's rules: valid json and files, originals kept, pasted objects well formed and placed."""
    coco = load_coco(out / "instances.json", out / "images", check_images=True)
    assert len(COCO(str(out / "instances.json")).anns) == len(coco.anns)
    kinds: collections.Counter = collections.Counter()
    strip = lambda a: {k: v for k, v in a.items() if k not in ("id", "image_id")}  # noqa: E731
    for image in coco.dataset["images"]:
        original_id = image.get("copy_pasted_from", image["id"])
        originals = source.imgToAnns.get(original_id, [])
        annotations = coco.imgToAnns.get(image["id"], [])
        kept = [a for a in annotations if "copy_pasted_from" not in a]
        pasted = [a for a in annotations if "copy_pasted_from" in a]
        assert [strip(a) for a in kept] == [strip(a) for a in originals]
        if "copy_pasted_from" not in image:
            assert [a["id"] for a in kept] == [a["id"] for a in originals]  # same image: same ids
        if not pasted:
            kinds["unchanged"] += 1
            continue
        kinds["augmented"] += 1
        _, masks = masks_of(coco, image["id"])
        height, width = masks.shape[1:]
        originals_union = masks[:len(kept)].any(axis=0)
        pasted_union = np.zeros_like(originals_union)
        for annotation, mask in zip(pasted, masks[len(kept):]):
            rle = coco.annToRLE(annotation)
            assert annotation["area"] == mask_utils.area(rle) == mask.sum()
            x1, y1, x2, y2 = mask_box(mask)
            assert annotation["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert x1 >= margin and y1 >= margin and x2 <= width - margin and y2 <= height - margin
            assert not (mask & originals_union).any() and not (mask & pasted_union).any()
            pasted_union |= mask
            copied = source.anns[annotation["copy_pasted_from"]]
            assert copied["image_id"] == original_id and copied["category_id"] == annotation["category_id"]
            assert copied["area"] <= 1024 and not copied.get("iscrowd", 0)
        # the original's pixels are untouched outside the pasted masks
        before = read_image(source_images / source.imgs[original_id]["file_name"])
        after = read_image(out / "images" / image["file_name"])
        assert not ((before != after).any(dim=0).numpy() & ~pasted_union).any()
    with_small = {a["image_id"] for a in source.dataset["annotations"] if a["area"] <= 1024 and not a.get("iscrowd", 0)}
    if setting == "original+augmented":
        assert len(coco.imgs) == len(source.imgs) + len(with_small)
    else:
        assert len(coco.imgs) == len(source.imgs)
    return kinds


@pytest.mark.parametrize("setting", ["original+augmented", "augmented"])
def test_offline_copy_paste_writes_a_valid_dataset(embedded_subset, tmp_path, setting):
    annotations, images = embedded_subset
    result = copy_paste_coco(annotations, images, tmp_path / "out", CopyPasteSettings("several", 3), setting=setting,
                             seed=1, progress=False)
    kinds = check_written_dataset(load_coco(annotations), images, tmp_path / "out", setting)
    assert kinds["augmented"] == result.augmented_images > 0
    assert result.counts.pasted > 0 and result.counts.images == 8
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_offline_output_depends_only_on_the_seed_not_on_workers(embedded_subset, tmp_path):
    annotations, images = write_subset(embedded_subset[0], tmp_path / "four.json", 4), embedded_subset[1]
    for name, seed, workers in (("a", 4, 1), ("b", 4, 2), ("c", 5, 1)):
        copy_paste_coco(annotations, images, tmp_path / name, CopyPasteSettings("all", 1), seed=seed, workers=workers,
                        progress=False)
    read = lambda name: (tmp_path / name / "instances.json").read_text()  # noqa: E731
    assert json.loads(read("a"))["images"]
    assert read("a") == read("b") != read("c")
    files = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b" / "images").iterdir())
    assert all((tmp_path / "a" / "images" / f).read_bytes() == (tmp_path / "b" / "images" / f).read_bytes() for f in files)


def test_existing_output_is_refused_then_replaced_whole(embedded_subset, tmp_path):
    annotations, images = embedded_subset
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="already exists"):
        copy_paste_coco(annotations, images, out, progress=False)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    copy_paste_coco(annotations, images, out, CopyPasteSettings("one", 1), overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["images", "instances.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_arguments_fail_before_anything_is_written(embedded_subset, tiny_coco, tmp_path):
    annotations, images = embedded_subset
    with pytest.raises(ValueError, match="setting='both' is unknown"):
        copy_paste_coco(annotations, images, tmp_path / "out", setting="both")
    with pytest.raises(ValueError, match="workers=0"):
        copy_paste_coco(annotations, images, tmp_path / "out", workers=0)
    with pytest.raises(ValueError, match="image_format='gif'"):
        copy_paste_coco(annotations, images, tmp_path / "out", image_format="gif")
    with pytest.raises(ValueError, match="strategy='many' is unknown"):
        copy_paste_coco(annotations, images, tmp_path / "out", CopyPasteSettings("many"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        copy_paste_coco(annotations, tmp_path / "nowhere", tmp_path / "out")
    for annotation in tiny_coco["annotations"]:
        if not annotation["iscrowd"]:
            del annotation["segmentation"]
    from tests.conftest import write_coco  # the shared helper that also draws the images
    path, tiny_images = write_coco(tmp_path / "tiny", tiny_coco)
    with pytest.raises(CocoFormatError, match="have no 'segmentation'.*instance masks"):
        copy_paste_coco(path, tiny_images, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_commands_write_and_chain(embedded_subset, tmp_path, capsys):
    annotations, images = embedded_subset
    out = tmp_path / "pasted"
    assert main(["augment", "--annotations", str(annotations), "--images", str(images), "--out", str(out),
                 "--strategy", "one", "--count", "2", "--setting", "augmented", "--quiet", "--format", "jpg"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'instances.json'}" in printed and "pastes done" in printed
    assert any(p.suffix == ".jpg" and p.stem.endswith("_copy_paste") for p in (out / "images").iterdir())
    over = tmp_path / "pasted_2x.json"
    assert main(["oversample", "--annotations", str(out / "instances.json"), "--out", str(over), "--factor", "2"]) == 0
    assert "each 2x" in capsys.readouterr().out
    assert len(load_coco(over, out / "images", check_images=True).imgs) > 8
    assert main(["oversample", "--annotations", str(annotations), "--out", str(over), "--factor", "0.5"]) == 2
    assert "factor=0.5 is below 1" in capsys.readouterr().err
    assert main(["augment", "--annotations", str(annotations), "--images", str(images), "--out", str(out),
                 "--strategy", "all", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["augment", "--annotations", str(annotations), "--images", str(images), "--out", str(out),
              "--strategy", "most"])
    assert "invalid choice: 'most'" in capsys.readouterr().err


@pytest.mark.coco_mini
def test_offline_copy_paste_on_coco_mini(coco_mini, tmp_path):
    annotations, images = coco_mini
    subset = write_subset(annotations, tmp_path / "mini.json", 6, only_with_small=True)
    result = copy_paste_coco(subset, images, tmp_path / "out", CopyPasteSettings("all", 1), progress=False)
    source = load_coco(subset)
    coco = load_coco(tmp_path / "out" / "instances.json")
    # COCO's originals may overlap one another; check what was pasted against all of them
    for image in coco.dataset["images"]:
        annotations_of_image, masks = masks_of(coco, image["id"])
        pasted = np.array(["copy_pasted_from" in a for a in annotations_of_image])
        if pasted.any():
            assert not (masks[pasted].sum(axis=0) > 1).any()
            assert not (masks[pasted].any(axis=0) & masks[~pasted].any(axis=0)).any()
    assert len(coco.imgs) == 12 and result.counts.pasted > 0
    kept = [a for a in coco.dataset["annotations"] if "copy_pasted_from" not in a and a["image_id"] in source.imgs]
    assert sorted(kept, key=lambda a: a["id"]) == sorted(source.dataset["annotations"], key=lambda a: a["id"])


# ----------------------------------------------------------------------------------------------------------
# Nothing lost: outputs apart from the inputs, every output inside --out, copies, no work folder left
# ----------------------------------------------------------------------------------------------------------

def copy_dataset(embedded_subset, folder: Path, count: int = 2) -> tuple[Path, Path]:
    """A dataset of its own under ``folder``: ``instances.json`` and ``images/`` with copies of ``count`` images
    of the embedded subset."""
    source, images = embedded_subset
    (folder / "images").mkdir(parents=True)
    annotations = write_subset(source, folder / "instances.json", count)
    for image in json.loads(annotations.read_text())["images"]:
        (folder / "images" / image["file_name"]).write_bytes((images / image["file_name"]).read_bytes())
    return annotations, folder / "images"


def augment_argv(annotations, images, out, *more: str) -> list[str]:
    return ["augment", "--annotations", str(annotations), "--images", str(images), "--out", str(out),
            "--strategy", "all", "--quiet", *more]


@pytest.mark.parametrize("where, relation", [
    ("dataset", "holds the input"),            # --out is the folder holding instances.json and images/
    ("parent", "holds the input"),             # a folder further up
    ("images", "is the input"),
    ("inside_images", "lies inside the input folder"),
    ("json", "is the input"),
    ("symlink", "holds the input"),            # a link to the dataset folder
    ("relative", "holds the input"),           # ../ds from a working folder beside it
])
def test_augment_refuses_an_output_that_is_inside_or_holds_an_input(embedded_subset, tmp_path, monkeypatch, capsys,
                                                                    where, relation):
    annotations, images = copy_dataset(embedded_subset, tmp_path / "outer" / "ds")
    (tmp_path / "link").symlink_to(tmp_path / "outer" / "ds")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    out = {"dataset": tmp_path / "outer" / "ds", "parent": tmp_path / "outer", "images": images,
           "inside_images": images / "augmented", "json": annotations, "symlink": tmp_path / "link",
           "relative": Path("../outer/ds")}[where]
    before = file_digests(tmp_path)
    assert_refused(capsys, augment_argv(annotations, images, out, "--overwrite"), "error: the output folder", relation)
    assert file_digests(tmp_path) == before  # nothing written, nothing removed, no work folder
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_augment_writes_beside_its_inputs_and_overwrites_an_output_apart_from_them(embedded_subset, tmp_path, capsys):
    annotations, images = copy_dataset(embedded_subset, tmp_path / "ds")
    before = file_digests(tmp_path / "ds")
    out = tmp_path / "ds" / "augmented"  # in the dataset folder, but neither an input nor around one
    for extra in ((), ("--overwrite",)):
        assert main(augment_argv(annotations, images, out, *extra)) == 0
        assert sorted(p.name for p in out.iterdir()) == ["images", "instances.json"]
    assert {k: v for k, v in file_digests(tmp_path / "ds").items() if not k.startswith("augmented/")} == before


@pytest.mark.parametrize("climb", ["../../", "absolute"])
def test_augment_refuses_a_file_name_leading_out_of_the_image_folder(embedded_subset, tmp_path, capsys, climb):
    annotations, images = copy_dataset(embedded_subset, tmp_path / "ds")
    data = json.loads(annotations.read_text())
    name = data["images"][0]["file_name"]
    (images / name).rename(tmp_path / name)  # the file exists where the name points, beside --out
    data["images"][0]["file_name"] = str(tmp_path / name) if climb == "absolute" else climb + name
    annotations.write_text(json.dumps(data))
    before = file_digests(tmp_path)
    assert_refused(capsys, augment_argv(annotations, images, tmp_path / "out"),
                   "'file_name'", repr(data["images"][0]["file_name"]), "leaves the image folder")
    assert file_digests(tmp_path) == before
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))


def test_augment_copies_the_images_unless_told_to_link_them(embedded_subset, tmp_path):
    annotations, images = copy_dataset(embedded_subset, tmp_path / "ds")
    before = file_digests(tmp_path / "ds")
    assert main(augment_argv(annotations, images, tmp_path / "copied")) == 0
    assert main(augment_argv(annotations, images, tmp_path / "linked", "--link-images")) == 0
    for image in json.loads(annotations.read_text())["images"]:
        copied, linked = tmp_path / "copied" / "images" / image["file_name"], tmp_path / "linked" / "images" / image["file_name"]
        assert copied.read_bytes() == linked.read_bytes() == (images / image["file_name"]).read_bytes()
        assert not copied.samefile(images / image["file_name"]) and linked.samefile(images / image["file_name"])
        with open(copied, "r+b") as handle:  # an editor saving over the output image, in place
            handle.write(b"edited")
    assert file_digests(tmp_path / "ds") == before  # editing the copies changed no input


def test_leftover_work_folders_are_reported_and_removed(embedded_subset, tmp_path, capsys, caplog):
    fcntl = pytest.importorskip("fcntl")  # the lock that marks a live run's folder
    annotations, images = copy_dataset(embedded_subset, tmp_path / "ds")
    for name in (".out-0123abcd", ".out-live0000", ".out-2-0123abcd", ".out-other"):
        (tmp_path / name / "images").mkdir(parents=True)
        (tmp_path / name / "images" / "x.png").write_bytes(b"\0" * 2_500_000)
    live = os.open(tmp_path / ".out-live0000", os.O_RDONLY)  # a run that is still writing holds its folder
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        assert main(augment_argv(annotations, images, tmp_path / "out")) == 0
    finally:
        os.close(live)
    printed = capsys.readouterr().out
    assert f"removed {tmp_path / '.out-0123abcd'} (2.5 MB), a work folder left by an interrupted run" in printed
    assert "left by an interrupted run" in caplog.text and ".out-0123abcd" in caplog.text
    # the live run's folder, another output's ("out-2") and a name that is no work folder are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out-2-0123abcd", ".out-live0000", ".out-other", "ds", "out"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_augment_removes_its_work_folder(embedded_subset, tmp_path, sig):
    _, images = embedded_subset
    annotations = write_subset(embedded_dataset("train")[0], tmp_path / "many.json", 400)
    before = file_digests(images), annotations.read_bytes()

    def busy() -> bool:  # mid-run: the work folder exists and holds images already
        return any(len(list((work / "images").glob("*"))) >= 5 for work in tmp_path.glob(".out-*"))

    code, err = interrupt_command(augment_argv(annotations, images, tmp_path / "out", "--workers", "1"), busy, sig)
    # SIGTERM: ended by the signal, as it asks. Ctrl-C: Python's KeyboardInterrupt (which C code running at that
    # moment may turn into another exception), so only "not a success"
    assert (code == -sig) if sig == signal.SIGTERM else (code != 0), err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.json"]  # no work folder, no output
    assert (file_digests(images), annotations.read_bytes()) == before
