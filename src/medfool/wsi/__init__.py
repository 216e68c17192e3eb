"""Whole-slide images: reading pyramidal slides, finding tissue, tiling, and building slides
from real tissue tiles. Needs the wsi extra (``pip install 'medfool[wsi]'``: tiffslide, tifffile,
imagecodecs; OpenSlide optionally)."""
