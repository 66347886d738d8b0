"""msnb: cross-dataset generalization of MS lesion segmentation, in notebooks.

Reproduces and extends Badea & Popa (2024), "Toward Generalizable Multiple Sclerosis
Lesion Segmentation Models". The package is a flat set of small domain modules that
the notebooks in ``notebooks/`` call.
"""

__version__ = "0.1.0"
