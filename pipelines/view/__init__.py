"""The epistasis map in the browser: a zoomable genome x genome viewer over a scan's map pyramid.

:mod:`pipelines.view.data` reads a 2D scan folder (``pyramid/``, ``top_pairs.tsv``,
``summary.json``) and answers the viewer's questions (tiles, the best pair under a pixel, a pair's
card, search); :mod:`pipelines.view.app` serves them with the static page in ``static/`` (plain
JavaScript written in the project: no CDN, no network); :mod:`pipelines.view.mcool` writes the map
as a multi-resolution cooler file with max aggregation.
"""
