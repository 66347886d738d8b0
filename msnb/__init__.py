"""msnb: cross-dataset generalization of MS lesion segmentation, in notebooks.

Reproduces and extends Badea & Popa (2024), "Toward Generalizable Multiple Sclerosis
Lesion Segmentation Models". The package is a set of small domain modules that the
notebooks in ``notebooks/`` call, in layers that import only downwards (README: "How the
code is laid out"): core (paths, files, nifti, records, docs) -> data (masks, datasets,
preprocess, phantom, sources) -> model (device, recipe, normalize, slices, models, bundle,
metrics, predict, train) -> analysis (agreement, stats, explore) -> presentation (viz,
widgets, report) -> study -> cli.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
