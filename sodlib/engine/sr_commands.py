"""``python -m sodlib sr train | evaluate``: super-resolution of object crops on your own COCO data (or drawn pairs).

- ``sr train --annotations A --images DIR --model espcn --scale 2 --out DIR [--iterations N] [--loss l1|mse|feature
  --features DETECTOR_CHECKPOINT]``: train on the object crops of the train split (see
  :mod:`sodlib.data.sr_pairs` for the protocol), writing ``weights.pt``, ``checkpoint.pt`` and ``run.json``
  atomically; the same command again continues an unfinished run.
- ``sr evaluate --weights DIR/weights.pt --annotations A --images DIR --scale 2 [--format json]``: PSNR and SSIM
  of the model, bicubic and bilinear on the val split's crops, with the protocol.

``--embedded-pairs N`` instead of ``--annotations/--images`` uses ``N`` pairs drawn by the embedded generator
(small objects with their true high-resolution twins; evaluation draws them with seed + 1).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _protocol(args: argparse.Namespace):
    from sodlib.data.sr_pairs import SRProtocol

    return SRProtocol(scale=args.scale, lr_size=args.lr_size, margin=args.margin, min_lr_side=args.min_lr_side)


def _check_source(args: argparse.Namespace) -> None:
    coco = args.annotations is not None or args.images is not None
    if coco == (args.embedded_pairs is not None):
        raise ValueError("give the data as --annotations A --images DIR (COCO), or as --embedded-pairs N, not both or neither")
    if coco and (args.annotations is None or args.images is None):
        raise ValueError("--annotations and --images go together (the instances json and its image folder)")
    if coco and not Path(args.annotations).is_file():
        raise FileNotFoundError(f"--annotations {args.annotations} does not exist; fix: the path of a COCO instances json")
    if coco and not Path(args.images).is_dir():
        raise FileNotFoundError(f"--images {args.images} is not a folder; fix: the folder holding the json's images")


def _pairs(args: argparse.Namespace, split: str, seed: int):
    from sodlib.data.sr_pairs import coco_sr_pairs, embedded_sr_pairs

    if args.embedded_pairs is not None:
        return embedded_sr_pairs(args.embedded_pairs, _protocol(args), seed=seed)
    return coco_sr_pairs(args.annotations, args.images, _protocol(args), split=split, max_crops=args.max_crops)


def _feature_extractor(path: str | None, loss: str):
    if loss != "feature":
        if path is not None:
            raise ValueError("--features is used only with --loss feature")
        return None
    if path is None:
        raise ValueError("--loss feature needs --features <detector checkpoint> (a sodlib training's checkpoints/last.pt): "
                         "offline there is no ImageNet VGG, so the features are those of a detector you trained")
    from sodlib.engine.checkpoint import load_checkpoint
    from sodlib.models import rebuild_model
    from sodlib.models.feature_loss import detector_feature_extractor

    checkpoint = load_checkpoint(path)
    detector = rebuild_model(checkpoint["model_config"])
    detector.load_state_dict(checkpoint["model"])
    return detector_feature_extractor(detector)


def _train(args: argparse.Namespace) -> int:
    from sodlib.engine.sr_training import SRTrainConfig, train_sr

    config = SRTrainConfig(args.model, args.scale, iterations=args.iterations, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, loss=args.loss, seed=args.seed).check()
    _check_source(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; fix: a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / "checkpoint.pt").is_file():
        raise ValueError(f"--out {out} is not empty and holds no SR run; fix: another --out (nothing was written)")
    extractor = _feature_extractor(args.features, args.loss)
    pairs = _pairs(args, "train", args.seed)
    summary = train_sr(pairs, config, out, feature_extractor=extractor, progress=not args.no_progress)
    last = summary["history"][-1]["loss"] if summary["history"] else float("nan")
    print(f"trained {config.model} x{config.scale} for {summary['iterations']} steps on {summary['pairs']} crops "
          f"({summary['source']}) in {summary['train_seconds']:.1f} s, last loss {last:.4f}; weights {summary['weights']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sodlib.engine.sr_training import load_sr_weights
    from sodlib.eval.image_quality import compare_upscalers

    model = load_sr_weights(args.weights, scale=args.scale)
    _check_source(args)
    pairs = _pairs(args, args.split, args.seed + 1)
    report = compare_upscalers(pairs, {"model": model, "bicubic": "bicubic", "bilinear": "bilinear"}, channel=args.channel)
    report["model"] = dict(model.build_options)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    from sodlib.tables import format_table

    print(f"{report['crops']} crops ({report['source']}), x{report['scale']}, {report['channel']}, "
          f"{report['protocol']['metric_border']}")
    rows = [[name, f"{m['psnr']:.2f} ± {m['psnr_sd']:.2f}", f"{m['ssim']:.4f} ± {m['ssim_sd']:.4f}"]
            for name, m in report["methods"].items()]
    print(format_table(rows, ["method", "PSNR (dB)", "SSIM"]))
    return 0


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", help="COCO instances json")
    parser.add_argument("--images", help="folder holding its images")
    parser.add_argument("--embedded-pairs", type=int, metavar="N", help="use N drawn pairs with true HR twins instead")
    parser.add_argument("--scale", type=int, required=True, help="upscaling factor (2 or 4)")
    parser.add_argument("--lr-size", type=int, default=32, help="low-resolution crop side in pixels (default 32)")
    parser.add_argument("--margin", type=float, default=0.25, help="context around the object, a fraction of its extent")
    parser.add_argument("--min-lr-side", type=float, default=6.0, help="smallest object side at low resolution (px)")
    parser.add_argument("--max-crops", type=int, help="keep at most this many crops (COCO)")
    parser.add_argument("--seed", type=int, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    sr = subparsers.add_parser("sr", help="super-resolution of object crops: train, evaluate",
                               description="Super-resolution of small object crops (SRCNN, ESPCN, encoder-decoder).")
    commands = sr.add_subparsers(dest="sr_command", required=True)
    from sodlib.engine.sr_training import SR_LOSSES

    train = commands.add_parser("train", help="train an SR model on object crops")
    train.add_argument("--model", required=True, help="srcnn, espcn or encoder_decoder")
    train.add_argument("--out", required=True, help="output folder (weights.pt, checkpoint.pt, run.json)")
    train.add_argument("--iterations", type=int, default=2000)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--loss", choices=SR_LOSSES, default="l1")
    train.add_argument("--features", help="detector checkpoint whose backbone gives the feature loss's features")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data_flags(train)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="PSNR / SSIM of SR weights, bicubic and bilinear")
    evaluate.add_argument("--weights", required=True, help="DIR/weights.pt written by sr train")
    evaluate.add_argument("--split", choices=("train", "val", "all"), default="val", help="COCO split (default val)")
    evaluate.add_argument("--channel", choices=("rgb", "y"), default="rgb")
    evaluate.add_argument("--format", choices=("text", "json"), default="text")
    _add_data_flags(evaluate)
    evaluate.set_defaults(func=_evaluate)
