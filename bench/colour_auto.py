"""The colour test of /pipeline?colorize=auto (transformer/colour.py) on real photos.

    .venv/bin/python bench/colour_auto.py

scikit-image's colour and grey photos and old-photo variants of them (tests/photo_variants.py):
faded colour prints, sepia and cyanotype prints, yellowed scans, phone photos of prints, JPEG
round trips. Prints, per photo and variant, the measured spread (Delta E*ab that no single tint
explains, 95th percentile), what it should be and what the threshold decides, then the range per
variant and the time per call at 2048 px. The figures are in transformer/colour.py's docstring.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import photo_variants as pv
from transformer import colour


def main() -> None:
    rows = []
    for names, variants in ((pv.COLOUR, pv.COLOUR_VARIANTS), (pv.GREY, pv.GREY_VARIANTS)):
        for name in names:
            rgb = pv.photo(name)
            for variant, (make, expected) in variants.items():
                spread = colour.colour_spread(make(rgb))
                rows.append((name, variant, expected, spread))
    print(f"threshold {colour.THRESHOLD}: colour of its own when spread >= threshold\n")
    print("| photo | variant | should be | spread | decided |")
    print("|---|---|---|---|---|")
    for name, variant, expected, spread in rows:
        decided = spread >= colour.THRESHOLD
        mark = "" if decided == expected else " (differs)"
        print(f"| {name} | {variant or 'as is'} | {'colour' if expected else 'no colour'} | "
              f"{spread:.2f} | {'colour' if decided else 'no colour'}{mark} |")  # fmt: skip
    print("\n| variant | min | max |")
    print("|---|---|---|")
    groups: dict[tuple[str, bool], list[float]] = {}
    for name, variant, expected, spread in rows:
        kind = "colour photos" if name in pv.COLOUR else "grey photos"
        groups.setdefault((f"{kind}, {variant or 'as is'}", expected), []).append(spread)
    for (label, _), spreads in groups.items():
        print(f"| {label} | {min(spreads):.2f} | {max(spreads):.2f} |")
    big = np.asarray(Image.fromarray(pv.photo("astronaut")).resize((2048, 2048)))
    colour.colour_spread(big)
    start = time.perf_counter()
    for _ in range(10):
        colour.colour_spread(big)
    print(f"\n{(time.perf_counter() - start) / 10 * 1000:.1f} ms per call at 2048x2048")


if __name__ == "__main__":
    main()
