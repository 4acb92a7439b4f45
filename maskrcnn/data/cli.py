"""`maskrcnn data ...` subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maskrcnn.errors import UserError


def _image_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    return height, width


def _synth(args: argparse.Namespace) -> int:
    from maskrcnn.data.synth import generate

    out = generate(args.out, train=args.train, val=args.val, seed=args.seed, image_size=args.image_size)
    print(out)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from maskrcnn.data.convert import convert

    if args.coco_dir:
        if args.annotations or args.images:
            raise UserError("data convert: give either --coco-dir (with --split) or --annotations and --images, not both")
        coco_dir = Path(args.coco_dir)
        annotations = coco_dir / "annotations" / f"instances_{args.split}.json"
        images_dir = coco_dir / args.split
    elif args.annotations and args.images:
        annotations, images_dir = Path(args.annotations), Path(args.images)
    else:
        raise UserError("data convert: give --coco-dir DIR (COCO 2017 layout) or both --annotations FILE and --images DIR")
    manifest = convert(
        annotations=annotations,
        images_dir=images_dir,
        out_dir=args.out,
        split=args.split,
        shards=args.shards,
        workers=args.workers,
        strict=args.strict,
    )
    summary = {k: manifest[k] for k in ("split", "num_images", "num_instances", "num_skipped",
                                        "num_skipped_instances", "num_fixed")}
    summary["shards"] = len(manifest["shards"])
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _download(args: argparse.Namespace) -> int:
    from maskrcnn.data.download import download_coco

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    out = download_coco(args.out, source=args.source, checksums=args.checksums, splits=splits,
                        endpoint_url=args.endpoint_url, keep_archives=args.keep_archives)
    print(out)
    return 0


def _mirror(args: argparse.Namespace) -> int:
    from maskrcnn.data.mirror import make_mirror

    print(make_mirror(args.coco_dir, args.out))
    return 0


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    parser = commands.subcommand(
        "data", "synth", "generate a shapes dataset in the COCO 2017 layout (train2017, val2017)", _synth
    )
    parser.add_argument("--out", required=True, help="COCO dir to create")
    parser.add_argument("--train", type=int, default=256, help="train2017 images")
    parser.add_argument("--val", type=int, default=64, help="val2017 images")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical dataset")
    parser.add_argument("--image-size", type=_image_size, default=None, metavar="WxH",
                        help="fixed image size (default: random sides of 160-320 px)")

    parser = commands.subcommand(
        "data", "convert", "convert a COCO-format dataset to TFRecord shards + manifest.json", _convert
    )
    source = parser.add_argument_group("source (one of)")
    source.add_argument("--coco-dir", help="COCO 2017 layout: annotations/instances_SPLIT.json and SPLIT/")
    source.add_argument("--annotations", help="a COCO-format annotation JSON of your own ...")
    source.add_argument("--images", help="... and the folder its file_name entries are relative to")
    parser.add_argument("--split", default="train2017", help="split name (shard file prefix)")
    parser.add_argument("--out", required=True, help="shards dir to write")
    parser.add_argument("--shards", type=int, default=None,
                        help="number of shards (default: one per ~512 images)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad image or annotation instead of skipping it")

    parser = commands.subcommand(
        "data", "download", "download, verify and extract COCO 2017 (resumable; a second run skips what is done)", _download
    )
    parser.add_argument("--out", required=True, help="COCO dir to fill (annotations/, train2017/, val2017/)")
    parser.add_argument("--source", default=None, metavar="URL|s3://BUCKET/PREFIX|DIR",
                        help="where the archives are; none: the official images.cocodataset.org")
    parser.add_argument("--checksums", default=None, metavar="FILE",
                        help='JSON {archive: {"size": bytes, "md5": hex}} overriding the published values')
    parser.add_argument("--splits", default="train2017,val2017", help="comma-separated splits to fetch")
    parser.add_argument("--endpoint-url", default=None,
                        help="S3-compatible endpoint for s3:// sources; none: AWS_ENDPOINT_URL, else AWS")
    parser.add_argument("--keep-archives", action="store_true",
                        help="keep the verified zips after extraction instead of deleting them (they double the disk use)")

    parser = commands.subcommand(
        "data", "mirror", "pack a COCO dir into COCO's archive names + checksums.json (a --source for download)", _mirror
    )
    parser.add_argument("--coco-dir", required=True, help="COCO dir to pack (e.g. from `maskrcnn data synth`)")
    parser.add_argument("--out", required=True, help="mirror folder to write")
