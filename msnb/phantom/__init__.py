"""The synthetic multi-center FLAIR phantom: msnb's embedded default data.

Implements ``docs/phantom.md``: subjects are warped copies of the MNI152 2009a tissue
templates shipped with nilearn, lesions come from a log-normal generator with a
periventricular preference, each simulated scanner ("center") applies slice thickness,
contrast, bias field, Rician noise, gamma, intensity scale and bright outliers, and
simulated raters outline the lesions. Four datasets are written in the real datasets'
layouts so that :mod:`msnb.datasets` reads them unchanged:

- ``isbi2015/training/trainingNN/{preprocessed,masks}/...`` (2 raters, longitudinal,
  skull-stripped: the FLAIR is exactly 0 outside the brain),
- ``msseg2016/{Training,Testing}/Center_CC/Patient_PP/...`` (7 raters + consensus +
  brain mask; the test set adds the unseen center 03),
- ``3dmrms/patientXX/...`` (consensus + brain mask),

plus the noiseless truth under ``<dataset>/truth/`` (lesion mask and a tissue label map
``0`` background, ``1`` CSF, ``2`` GM, ``3`` WM, ``4`` ventricles) and ``phantom.json``
(preset, seed, every parameter, per-scan statistics, msnb version).

One module per job:

- :mod:`.config`: parameter dataclasses (every default of docs/phantom.md), the scanner
  table, presets, seeding;
- :mod:`.fields`: smooth random fields;
- :mod:`.anatomy`: templates and subjects;
- :mod:`.lesions`: lesion generation, evolution, rasterization, statistics;
- :mod:`.scanner`: the center model (contrast, slice thickness, bias, noise, gamma, scale, outliers);
- :mod:`.raters`: simulated raters;
- :mod:`.layout`: the scans of a phantom and their files in the real layouts;
- :mod:`.simulate`: one scan in memory;
- :mod:`.generate`: :func:`generate_phantom` and the ``msnb phantom`` command;
- :mod:`.realism`: how much a scan looks like real FLAIR (docs/phantom.md section 9).

Randomness is seeded per scan from ``(seed, dataset, subject, timepoint)``, so the output
does not depend on the number of worker processes.
"""

from msnb.phantom.anatomy import Subject, Template, load_template, make_subject
from msnb.phantom.config import (
    CENTERS,
    PRESETS,
    AnatomyParams,
    CenterParams,
    DatasetSpec,
    JitterParams,
    LesionParams,
    PhantomConfig,
    RaterParams,
    make_config,
    seeded_rng,
)
from msnb.phantom.fields import smooth_field
from msnb.phantom.generate import generate_phantom, register_cli, run_task
from msnb.phantom.layout import ScanTask, scan_tasks
from msnb.phantom.lesions import (
    Lesion,
    compute_lesion_stats,
    evolve_lesions,
    generate_lesions,
    rasterize_lesions,
)
from msnb.phantom.raters import simulate_raters
from msnb.phantom.scanner import apply_center, measure_contrast, render_contrast
from msnb.phantom.simulate import TISSUE_LABELS, simulate_scan

__all__ = [
    "CENTERS",
    "PRESETS",
    "TISSUE_LABELS",
    "AnatomyParams",
    "CenterParams",
    "DatasetSpec",
    "JitterParams",
    "Lesion",
    "LesionParams",
    "PhantomConfig",
    "RaterParams",
    "ScanTask",
    "Subject",
    "Template",
    "apply_center",
    "compute_lesion_stats",
    "evolve_lesions",
    "generate_lesions",
    "generate_phantom",
    "load_template",
    "make_config",
    "make_subject",
    "measure_contrast",
    "rasterize_lesions",
    "register_cli",
    "render_contrast",
    "run_task",
    "scan_tasks",
    "seeded_rng",
    "simulate_raters",
    "simulate_scan",
    "smooth_field",
]
