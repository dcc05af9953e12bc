"""What native-resolution analysis costs per megapixel, against the triage view, on this machine.

For a few image sizes, times the shipped models through the scan's forensics path
(decode_image, the cards' views, stitched tiles) in native and triage analysis, and
native analysis with a coarse pass added (a card's `coarse_short_side`) and with another number
of mirror views (a card's `mirror_views`), beside a bare
tiled loop (the same tiles stacked and pushed through the segmenter, nothing else), and
reports images/s, tiles/s and seconds per megapixel. A benchmark: it reports, it never asserts.

    python -m bench.tiling_cost [--sizes 512x384,1024x768,2048x1536] [--threads 1] [--coarse-short-side 256]
                                [--mirror-views 1]
                                [--output bench/results/tiling_cost.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _photo_like(width: int, height: int, seed: int) -> bytes:
    from forensics.synthetic import real_photographs

    name, photo = real_photographs()[seed % len(real_photographs())]
    image = Image.fromarray(photo).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _time(function, repeats: int) -> float:
    function()  # warm-up: oneDNN builds its kernels on first use
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def measure(width: int, height: int, repeats: int, coarse_short_side: int = 0, mirror_views: int | None = None) -> dict:
    from forensics.checkpoint import bundled_checkpoint
    from forensics.decode import decode_image
    from forensics.inference import ClassifierPredictor, SegmenterPredictor
    from forensics.tiling import cut, segmenter_inputs, tile_grid

    classifier = ClassifierPredictor.from_checkpoint(bundled_checkpoint("classifier"))
    segmenter = SegmenterPredictor.from_checkpoint(bundled_checkpoint("segmenter"))
    data = _photo_like(width, height, seed=width)
    result = {"width": width, "height": height, "megapixels": round(width * height / 1e6, 3)}
    native_card = segmenter.card
    views = {"native": (classifier.card, native_card), "triage": (classifier.card.for_triage(), native_card.for_triage())}
    if coarse_short_side and native_card.resize_mode == "native_tiles":  # what a card's coarse pass would add
        views[f"native_with_coarse_pass_{coarse_short_side}"] = (classifier.card, native_card.replace(coarse_short_side=coarse_short_side))
    if mirror_views is not None and mirror_views != native_card.mirror_views:  # what another mirror_views would cost
        views[f"native_with_mirror_views_{mirror_views}"] = (classifier.card, native_card.replace(mirror_views=mirror_views))
    for analysis, (c_card, s_card) in views.items():

        def one_image():
            classifier.card, segmenter.card = c_card, s_card
            decoded = decode_image(data, [c_card.input_spec, s_card.input_spec])
            classifier.predict(classifier.view(decoded.inputs[c_card.input_spec])[None])
            view, _ = segmenter.view(decoded.inputs[s_card.input_spec])
            segmenter.image_score(next(segmenter.probability_maps([view])))

        seconds = _time(one_image, repeats)
        tiles = segmenter_inputs(s_card, height, width)  # with the coarse pass's own tiles and the mirror views
        result[analysis] = {"seconds_per_image": round(seconds, 3), "seconds_per_megapixel": round(seconds / result["megapixels"], 3),
                            "segmenter_inputs": tiles, "tiles_per_s": round(tiles / seconds, 2)}
    card = segmenter.card = native_card
    if card.resize_mode == "native_tiles":
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        tile = card.input_size[0]
        tiles = np.stack([cut(image, top, left, tile, tile) for top, left in tile_grid(height, width, tile, card.tile_overlap)])

        def bare_tiles():
            for start in range(0, len(tiles), segmenter.tiles_per_batch):
                segmenter.predict(tiles[start : start + segmenter.tiles_per_batch])

        seconds = _time(bare_tiles, repeats)
        result["bare_tiled_loop"] = {"seconds_per_image": round(seconds, 3), "tiles_per_s": round(len(tiles) / seconds, 2)}
        result["native_tiles_per_s_ratio_to_bare"] = round(result["native"]["tiles_per_s"] / result["bare_tiled_loop"]["tiles_per_s"], 3)
    return result


def main() -> None:
    import torch

    from forensics.model_card import MIRROR_VIEWS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x384,1024x768,2048x1536")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one model actor per core)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--coarse-short-side", type=int, default=256,
                        help="also time native analysis with a coarse pass at this short side (a card's coarse_short_side; 0 = skip)")
    parser.add_argument("--mirror-views", type=int, choices=MIRROR_VIEWS, default=1,
                        help="also time native analysis with this many mirror views (a card's mirror_views), when the "
                             "shipped card has another number")
    parser.add_argument("--output", type=Path, default=Path("bench/results/tiling_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from forensics.checkpoint import read_card, bundled_checkpoint

    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    results = {
        "command": "python -m bench.tiling_cost " + " ".join(sys.argv[1:]),
        "machine": {"processor": platform.processor() or platform.machine(), "torch_threads": args.threads},
        "cards": {kind: {k: getattr(read_card(bundled_checkpoint(kind)), k) for k in ("version", "input_size", "resize_mode", "crops", "tile_overlap", "max_tiles", "coarse_short_side", "mirror_views")}
                  for kind in ("classifier", "segmenter")},
        "sizes": [measure(width, height, args.repeats, args.coarse_short_side, args.mirror_views) for width, height in sizes],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=list) + "\n")
    print(json.dumps(results, indent=2, default=list))


if __name__ == "__main__":
    main()
