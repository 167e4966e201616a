"""Screenshots of run reports opened in a real browser (headless Chromium), for the docs and for reviewing.

    python docs/screenshot_report.py RUN [RUN ...] --out shots/ [--height 6000] [--thumbnail 700 --top 2000]

For each RUN (a run folder with report.html; write one first with `python -m tinycnn.report RUN`) it saves
OUT/<run name>.png: the page at 1200 px wide, the blank space below the page cut off, and with --thumbnail W
also OUT/<run name>-small.png: the top --top px of the page (default all of it) scaled to W px wide, in 256
colours (small enough to commit). Not part of the tests: it needs
Chromium (Debian: `apt-get install chromium`), found as `chromium`, `chromium-browser` or $CHROMIUM.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH = 1200
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def find_chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise SystemExit("error: no Chromium found (apt-get install chromium, or set CHROMIUM to its path)")


def screenshot(chromium, html_path, png_path, height):
    """Chromium's screenshot of the page in a WIDTH x height window, the blank rows below the page cut off."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}",
                        f"--window-size={WIDTH},{height}", Path(html_path).resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    with Image.open(png_path) as shot:
        page = shot.convert("RGB")
    pixels = np.asarray(page)
    used = np.flatnonzero((pixels < 250).any(axis=(1, 2)))
    bottom = min(page.height, int(used[-1]) + 20) if used.size else page.height
    page.crop((0, 0, page.width, bottom)).save(png_path)
    return page.crop((0, 0, page.width, bottom))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders holding report.html")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--height", type=int, default=6000, help="browser window height in px (default 6000)")
    parser.add_argument("--thumbnail", type=int, default=0, help="also save a copy this many px wide")
    parser.add_argument("--top", type=int, default=0, help="the small copy shows only the top TOP px of the page")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for run in map(Path, args.runs):
        html_path = run / "report.html"
        if not html_path.is_file():
            print(f"error: {html_path} does not exist (python -m tinycnn.report {run})", file=sys.stderr)
            return 1
        name = run.resolve().name
        page = screenshot(chromium, html_path, out / f"{name}.png", args.height)
        print(f"{out / f'{name}.png'}: {page.width}x{page.height}")
        if args.thumbnail:
            top = page.crop((0, 0, page.width, min(page.height, args.top or page.height)))
            small = top.resize((args.thumbnail, round(top.height * args.thumbnail / top.width)),
                               Image.Resampling.LANCZOS)
            small.quantize(256).save(out / f"{name}-small.png", optimize=True)
            print(f"{out / f'{name}-small.png'}: {small.width}x{small.height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
