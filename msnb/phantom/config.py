"""What defines a phantom: the parameter dataclasses, the scanner table, the presets, seeding.

The defaults that docs/phantom.md documents live here: :class:`AnatomyParams` (section 1),
:class:`LesionParams` (section 2), :class:`CenterParams` rows of :data:`CENTERS` and
:class:`JitterParams` (section 3), :class:`RaterParams` (section 4) and the presets of
:func:`make_config` (section 5). :func:`seeded_rng` is the one source of randomness.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "AnatomyParams",
    "CENTERS",
    "CenterParams",
    "DatasetSpec",
    "ISBI_RATERS",
    "JitterParams",
    "LesionParams",
    "MRMS_RATERS",
    "MSSEG_RATERS",
    "PRESETS",
    "PhantomConfig",
    "GRID_CALIBRATION",
    "RATER_CALIBRATION",
    "RaterParams",
    "make_config",
    "seeded_rng",
]

PRESETS = ("tiny", "quick", "standard")


@dataclass(frozen=True)
class AnatomyParams:
    """Per-subject anatomical variation (docs/phantom.md section 1).

    Attributes
    ----------
    scale_pct : float, default 5.0
        Isotropic scale drawn uniformly in +/- this percentage.
    rotation_deg : float, default 5.0
        Rotation about each axis drawn uniformly in +/- this many degrees.
    elastic_mm : float, default 2.0
        Maximum norm of the smooth elastic displacement.
    elastic_spacing_mm : float, default 20.0
        Control-point spacing of the elastic displacement.
    ventricle_dilation_mm : tuple of float, default (0.0, 2.0)
        Range of the ventricle enlargement.
    ventricle_box_mm : tuple, default ((-35, 35), (-45, 35), (-5, 35))
        MNI box in which the ventricles are searched.
    ventricle_csf : float, default 0.5
        CSF fraction above which a voxel can be ventricle.
    n_ventricle_components : int, default 2
        Largest CSF components kept as ventricles.
    sharpen_power : float, default 2.0
        The 1 mm template's CSF, GM and WM fractions are raised to this power and
        renormalized (a sharper cortical ribbon and deep grey nuclei than the population
        average; 1 keeps them).
    fold_corr_mm : float, default 2.5
        Correlation length of the folding field whose zero lines on the brain surface are
        the sulci (about 4.4 x this between neighbouring sulci); 0 disables the folding.
    sulcus_depth_mm : float, default 10.0
        Mean depth of the sulci below the brain surface (varies +/- 30 % over the brain).
    sulcus_width_mm : float, default 2.2
        Width of the CSF inside a sulcus.
    cortex_mm : float, default 2.5
        Thickness of the grey-matter ribbon on the surface and along the sulci.
    rim_mm : float, default 1.5
        Thickness of the ependymal rim lining the ventricles (its brightness is the
        center's ``rim_ratio``).
    texture_corr_mm : float, default 1.0
        Correlation length of the fine tissue texture (its SD is the center's
        ``texture_pct``).
    flow_corr_mm : float, default 3.0
        Correlation length of the field that places CSF-flow artefacts in the ventricles
        (their strength is the center's ``flow_ratio``).
    flow_fraction : float, default 0.15
        Share of the ventricle voxels a CSF-flow artefact covers.
    choroid_ml : float, default 0.0
        Volume of the choroid plexus tuft in each lateral ventricle's atrium (mL; 0: none).
        It replaces the ventricles' CSF there with tissue of signal ``choroid_ratio`` (to WM)
        and keeps the ventricle label: a bright structure that is not a lesion.
    choroid_ratio : float, default 1.3
        Its FLAIR signal relative to white matter (iso- to hyperintense to grey matter).
    choroid_mm : tuple of float, default (28.0, -40.0, 12.0)
        MNI point (x mirrored for the left side) nearest to which each tuft grows, through
        the ventricle voxels, with a lumpy 2 mm surface.
    """

    scale_pct: float = 5.0
    rotation_deg: float = 5.0
    elastic_mm: float = 2.0
    elastic_spacing_mm: float = 20.0
    ventricle_dilation_mm: tuple[float, float] = (0.0, 2.0)
    ventricle_box_mm: tuple[tuple[float, float], ...] = ((-35, 35), (-45, 35), (-5, 35))
    ventricle_csf: float = 0.5
    n_ventricle_components: int = 2
    sharpen_power: float = 2.0
    fold_corr_mm: float = 2.5
    sulcus_depth_mm: float = 10.0
    sulcus_width_mm: float = 2.2
    cortex_mm: float = 2.5
    rim_mm: float = 1.5
    texture_corr_mm: float = 1.0
    flow_corr_mm: float = 3.0
    flow_fraction: float = 0.15
    # recorded in phantom.json only with a choroid plexus (the quick preset's keeps its bytes)
    choroid_ml: float = field(default=0.0, metadata={"record_default": False})
    choroid_ratio: float = field(
        default=1.3, metadata={"record_default": False, "record_with": ("choroid_ml",)}
    )
    choroid_mm: tuple[float, float, float] = field(
        default=(28.0, -40.0, 12.0),
        metadata={"record_default": False, "record_with": ("choroid_ml",)},
    )


@dataclass(frozen=True)
class LesionParams:
    """Lesion generator (docs/phantom.md section 2).

    Attributes
    ----------
    log_voxels_mean, log_voxels_sd : float, default 2.92, 1.61
        ``ln`` of the lesion volume in mm^3 (voxels at 1 mm) is normal with these.
    voxels_range : tuple of float, default (3, 5000)
        Truncation of single-lesion volumes (mm^3).
    load_range_ml : tuple of float, default (0.3, 55)
        Clipping of the total lesion load.
    cap_probability : float, default 0.8
        Probability that a subject has confluent periventricular caps.
    n_caps : tuple of int, default (1, 3)
        Number of caps (inclusive range).
    cap_share : tuple of float, default (0.25, 0.5)
        Share of the load held by the caps.
    cap_thickness_mm : tuple of float, default (3.0, 6.0)
        Cap thickness away from the ventricle wall.
    decay_mm : float, default 11.2
        Lesion centres are drawn with weight ``WM^2 exp(-d_vent / decay_mm)``.
    infratentorial_z_mm, infratentorial_factor : float, default -20, 0.4
        Weight factor below this MNI z.
    axis_ratio : tuple of float, default (1.5, 3.0)
        Long-to-short axis ratio of the ellipsoids.
    dawson_mm : float, default 15.0
        Within this distance of the ventricles the long axis follows ``grad d_vent``.
    boundary_amplitude_mm : tuple of float, default (0.5, 1.0)
        Amplitude range of the smooth boundary noise.
    boundary_corr_mm : float, default 3.0
        Its correlation length.
    pv_width_mm : float, default 0.5
        Partial volume ``sigmoid(-signed_distance / pv_width_mm)``.
    ratio_sd : float, default 0.10
        Per-lesion SD of the lesion/WM ratio.
    texture_sd, texture_corr_mm : float, default 0.03, 0.5
        Texture inside lesions (relative SD of the ratio, correlation length).
    core_gain : float, default 0.6
        Within-lesion heterogeneity: a lesion's excess contrast ``r - 1`` is scaled by
        ``1 - core_gain / 2`` on its border rising to ``1 + core_gain / 2`` in its core.
    core_mm : float, default 1.5
        Depth below the lesion border over which the core brightens (``1 - exp(-d /
        core_mm)``).
    juxtacortical_share : float, default 0.15
        Share of the ellipsoids centred at the cortex's border with WM (weight
        ``GM WM``) instead of the periventricular weight.
    max_sites : int, default 90
        At most this many ellipsoids of a first timepoint get a site of their own; the
        rest of a large load grows onto them (confluent lesions), so lesion counts stay
        in the real range (27-140 per scan) instead of rising with the load.
    confluent_power : float, default 0.0
        A confluent ellipsoid grows onto an earlier one drawn with probability proportional
        to its volume to this power; 0 draws it uniformly.
    new_per_interval : float, default 2.0
        Poisson mean of new lesions between two timepoints.
    volume_log_sd : float, default 0.15
        Lesion volume change ``x exp(N(0, volume_log_sd))`` between timepoints.
    vanish_probability : float, default 0.05
        Probability that a lesion vanishes between two timepoints.
    periventricular_mm : float, default 3.0
        Distance defining "periventricular" in the statistics.
    """

    log_voxels_mean: float = 2.92
    log_voxels_sd: float = 1.61
    voxels_range: tuple[float, float] = (3.0, 5000.0)
    load_range_ml: tuple[float, float] = (0.3, 55.0)
    cap_probability: float = 0.8
    n_caps: tuple[int, int] = (1, 3)
    cap_share: tuple[float, float] = (0.25, 0.5)
    cap_thickness_mm: tuple[float, float] = (3.0, 6.0)
    decay_mm: float = 11.2
    infratentorial_z_mm: float = -20.0
    infratentorial_factor: float = 0.4
    axis_ratio: tuple[float, float] = (1.5, 3.0)
    dawson_mm: float = 15.0
    boundary_amplitude_mm: tuple[float, float] = (0.5, 1.0)
    boundary_corr_mm: float = 3.0
    pv_width_mm: float = 0.5
    ratio_sd: float = 0.10
    texture_sd: float = 0.03
    texture_corr_mm: float = 0.5
    core_gain: float = 0.6
    core_mm: float = 1.5
    juxtacortical_share: float = 0.15
    max_sites: int = 90
    confluent_power: float = field(default=0.0, metadata={"record_default": False})
    new_per_interval: float = 2.0
    volume_log_sd: float = 0.15
    vanish_probability: float = 0.05
    periventricular_mm: float = 3.0


@dataclass(frozen=True)
class CenterParams:
    """One simulated scanner (a row of docs/phantom.md section 3's table).

    Attributes
    ----------
    name : str
        Short name (``ISB``, ``M01`` ...).
    label : str
        Center label used in folder names (``"01"`` for ``Center_01``).
    scanner : str
    slice_mm : float
        Slice thickness simulated along z.
    noise_pct : float
        Rician noise SD as a percentage of the WM signal.
    inu_pct : float
        Bias field peak-to-peak over the brain, in percent.
    gamma : float
        Non-linearity ``I^gamma`` after scaling to [0, 1].
    lesion_ratio, gm_ratio, csf_ratio : float
        Contrast to white matter.
    scale : float
        Intensity units.
    outlier_fraction : float
        Fraction of brain voxels set to ``outlier_k`` x WM (0.0002 = 0.02 %).
    outlier_k : float
    rim_ratio : float, default 1.25
        Ependymal rim (ventricle wall) to WM.
    texture_pct : float, default 6.0
        SD of the fine multiplicative tissue texture, in percent.
    flow_ratio : float, default 0.0
        Brightness (to WM) of the CSF-flow artefacts in the ventricles; 0: none.
    """

    name: str
    label: str
    scanner: str
    slice_mm: float
    noise_pct: float
    inu_pct: float
    gamma: float
    lesion_ratio: float
    gm_ratio: float
    csf_ratio: float
    scale: float
    outlier_fraction: float
    outlier_k: float
    rim_ratio: float = 1.25
    texture_pct: float = 6.0
    flow_ratio: float = 0.0


CENTERS: dict[str, CenterParams] = {
    c.name: c
    for c in (
        CenterParams("ISB", "isbi", "Philips 3T 2D", 2.2, 6.0, 5.0, 1.00, 1.45, 1.23, 0.15, 1.0, 0.0, 0.0, flow_ratio=1.0),
        CenterParams("M01", "01", "Siemens Verio 3T", 1.0, 5.0, 10.0, 0.90, 1.50, 1.25, 0.20, 400.0, 0.0002, 3.0),
        CenterParams("M07", "07", "Siemens Aera 1.5T", 1.25, 5.0, 10.0, 1.10, 1.38, 1.18, 0.18, 150.0, 0.0002, 3.0, flow_ratio=0.9),
        CenterParams("M08", "08", "Philips Ingenia 3T", 1.0, 4.5, 10.0, 1.00, 1.45, 1.19, 0.25, 1500.0, 0.0002, 3.0),
        CenterParams("M03", "03", "GE 3T (unseen)", 1.0, 5.0, 15.0, 0.78, 1.52, 1.25, 0.28, 4000.0, 0.0005, 5.0),
        CenterParams("LJ", "ljubljana", "Siemens Trio 3T", 0.8, 4.0, 10.0, 1.20, 1.32, 1.15, 0.22, 800.0, 0.0003, 4.0),
    )
}  # fmt: skip


@dataclass(frozen=True)
class JitterParams:
    """Per-scan jitter of the center parameters (docs/phantom.md section 3).

    Attributes
    ----------
    gamma_log_sd : float, default 0.05
        ``gamma x exp(N(0, gamma_log_sd))``.
    ratio : float, default 0.03
        Contrast ratios +/- uniform.
    noise_rel : float, default 0.2
        Noise +/- this relative amount (uniform).
    bias_sd : float, default 0.5
        SD of the low-resolution log bias field before scaling to the INU.
    bias_grid : int, default 4
        Control points per axis of the bias field.
    """

    gamma_log_sd: float = 0.05
    ratio: float = 0.03
    noise_rel: float = 0.2
    bias_sd: float = 0.5
    bias_grid: int = 4


@dataclass(frozen=True)
class RaterParams:
    """Rater model of one simulated dataset (docs/phantom.md section 4).

    Attributes
    ----------
    n_raters : int
        Number of simulated raters.
    a_shared : float
        Amplitude (mm) of the ambiguity field shared by all raters.
    a_individual : tuple of float
        Range (mm) from which each rater's own field amplitude is drawn uniformly.
    sigma_b : float
        SD (mm) of each rater's global boundary offset.
    v50_voxels : float
        Lesion volume (mm^3, i.e. voxels at 1 mm) a rater detects with probability 0.5.
    fp_rate : float
        Poisson mean of false-positive spheres per rater and scan.
    v50_log_sd : float, default 0.5
        SD of ``ln v50_i`` around ``ln v50`` between raters.
    keep_slope : float, default 0.6
        Width of the logistic detection curve in ``ln v``.
    fp_radius_mm : tuple of float, default (0.8, 1.8)
        Radius range of false-positive spheres.
    corr_mm : float, default 3.0
        Correlation length of the boundary fields.
    consensus : {"majority", "staple"}, default "majority"
        How the consensus is built from the raters (:func:`msnb.masks.combine_masks`): a
        strict majority vote (default: fast and exact), or SimpleITK's STAPLE thresholded
        at 0.5.
    """

    n_raters: int
    a_shared: float
    a_individual: tuple[float, float]
    sigma_b: float
    v50_voxels: float
    fp_rate: float
    v50_log_sd: float = 0.5
    keep_slope: float = 0.6
    fp_radius_mm: tuple[float, float] = (0.8, 1.8)
    corr_mm: float = 3.0
    consensus: str = "majority"


@dataclass(frozen=True)
class DatasetSpec:
    """One simulated dataset (docs/phantom.md section 5).

    Attributes
    ----------
    key : str
        ``isbi2015``, ``msseg2016_train``, ``msseg2016_test`` or ``3dmrms`` (a name of
        :data:`msnb.datasets.DATASETS`).
    centers : tuple of (str, int)
        Center name and number of subjects.
    load_median_ml, load_sigma : float
        Total lesion load ``LogNormal(ln median, sigma)``.
    raters : RaterParams
    timepoints : tuple of int, default (1,)
        Timepoints per subject, cycled (only ISBI is longitudinal).
    """

    key: str
    centers: tuple[tuple[str, int], ...]
    load_median_ml: float
    load_sigma: float
    raters: RaterParams
    timepoints: tuple[int, ...] = (1,)

    @property
    def n_subjects(self) -> int:
        """Subjects over all centers."""
        return sum(n for _, n in self.centers)


ISBI_RATERS = RaterParams(2, 0.5, (0.7, 0.7), 0.4, 8.0, 5.0)
MSSEG_RATERS = RaterParams(7, 0.9, (0.9, 1.0), 0.5, 8.0, 5.0)
MRMS_RATERS = RaterParams(3, 0.4, (0.6, 0.6), 0.3, 5.0, 2.0)

#: Rater overrides per grid voxel size (mm). The table's rater amplitudes were calibrated on
#: 1 mm masks. On coarser phantom grids the same amplitudes give higher Dice (boundary voxels
#: are larger), so the individual amplitudes are re-calibrated by simulation on the quick
#: preset (1.5 mm) to hit the section-4 targets (MSSEG rater-consensus 0.72, rater-rater
#: 0.61; ISBI 0.73). On the 1 mm grid the smaller lesions of :data:`GRID_CALIBRATION` lowered
#: ISBI's rater-rater Dice to 0.64 with the table's 0.7 mm, hence 0.5 mm there.
RATER_CALIBRATION: dict[float, dict[str, dict]] = {
    1.0: {"isbi2015": {"a_individual": (0.5, 0.5)}},
    1.5: {"isbi2015": {"a_individual": (0.65, 0.65)}, "msseg": {"a_individual": (1.15, 1.25)}},
    3.0: {"isbi2015": {"a_individual": (0.65, 0.65)}, "msseg": {"a_individual": (1.15, 1.25)}},
}


#: Anatomy, lesion and center overrides per grid voxel size (mm), docs/phantom.md section 5.
#: The defaults were tuned on the quick preset (1.5 mm), where partial volume blurs the
#: lesions and the tissue texture is rougher per voxel; the same values on the 1 mm grid gave
#: brighter lesions, a lower per-voxel gradient and a median lesion of 22-30 mm^3 against
#: real FLAIR's 9-12 (section 9). Under ``centers``, ``lesion_ratio_shift`` is added to
#: every center's lesion/WM ratio, ``center_shifts`` adds more to named centers' (ISBI's 2.2 mm
#: slices blur its lesions dimmer at 1 mm; 3D-MR-MS's gamma stretches its brightest lesion
#: voxels) and ``noise_factor`` multiplies the noise (a 1 mm voxel holds 3.4 times less
#: signal than a 1.5 mm one); the other keys replace fields of :class:`AnatomyParams` and
#: :class:`LesionParams`.
GRID_CALIBRATION: dict[float, dict[str, dict]] = {
    1.0: {
        "anatomy": {"texture_corr_mm": 0.7, "choroid_ml": 1.0},
        "lesions": {"log_voxels_mean": 1.8, "boundary_amplitude_mm": (0.25, 0.5),
                    "max_sites": 50, "confluent_power": 1.0},
        "centers": {"lesion_ratio_shift": 0.02, "noise_factor": 1.35,
                    "center_shifts": {"ISB": 0.08}},
    },
}  # fmt: skip


def _calibrated_centers(calib: dict) -> dict[str, CenterParams]:
    """:data:`CENTERS` with a grid's ``lesion_ratio_shift`` (plus its ``center_shifts``) and
    ``noise_factor`` applied."""
    shift = calib.get("lesion_ratio_shift", 0.0)
    extra = calib.get("center_shifts", {})
    factor = calib.get("noise_factor", 1.0)
    if shift == 0 and factor == 1 and not extra:
        return dict(CENTERS)
    return {
        k: dataclasses.replace(c, lesion_ratio=round(c.lesion_ratio + shift + extra.get(k, 0), 4),
                               noise_pct=round(c.noise_pct * factor, 4))
        for k, c in CENTERS.items()
    }  # fmt: skip


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that defines a phantom (written to ``phantom.json``).

    Attributes
    ----------
    preset : str
    voxel_mm : float
        Isotropic voxel size of the phantom grid.
    datasets : tuple of DatasetSpec
    centers : dict of str to CenterParams, default :data:`CENTERS`
    anatomy, lesions, jitter : parameter dataclasses, default their defaults
    """

    preset: str
    voxel_mm: float
    datasets: tuple[DatasetSpec, ...]
    centers: dict[str, CenterParams] = field(default_factory=lambda: dict(CENTERS))
    anatomy: AnatomyParams = AnatomyParams()
    lesions: LesionParams = LesionParams()
    jitter: JitterParams = JitterParams()

    def dataset(self, key: str) -> DatasetSpec:
        """The dataset spec named ``key``."""
        return next(d for d in self.datasets if d.key == key)


#: Per preset: grid voxel (mm), ISBI subjects and their timepoints (cycled), MSSEG training
#: and test (center, subjects), 3D-MR-MS subjects.
_PRESET_SIZES = {
    "tiny": (3.0, 2, (2,), (("M01", 1), ("M08", 1)),
             (("M01", 1), ("M07", 1), ("M03", 1)), 2),
    "quick": (1.5, 3, (4, 5, 4), (("M01", 2), ("M07", 2), ("M08", 2)),
              (("M01", 2), ("M07", 2), ("M08", 2), ("M03", 3)), 6),
    "standard": (1.0, 5, (4, 4, 5, 4, 4), (("M01", 5), ("M07", 5), ("M08", 5)),
                 (("M01", 10), ("M07", 10), ("M08", 10), ("M03", 8)), 30),
}  # fmt: skip


def make_config(preset: str = "tiny") -> PhantomConfig:
    """The parameters of a preset.

    ``tiny`` (tests: 3 mm grid, 4 + 2 + 3 + 2 scans), ``quick`` (docs/phantom.md section 5:
    1.5 mm grid, 13 + 6 + 9 + 6 scans), ``standard`` (1 mm grid, 21 + 15 + 38 + 30 scans,
    the real datasets' counts). The quick preset uses 1.5 mm to generate in about a minute
    on two cores; rater amplitudes are re-calibrated for coarse grids
    (:data:`RATER_CALIBRATION`) and the 1 mm grid's anatomy, lesions and lesion contrast
    for real FLAIR's realism rows (:data:`GRID_CALIBRATION`).

    Raises
    ------
    ValueError
        For a name not in :data:`PRESETS`.
    """
    if preset not in _PRESET_SIZES:
        raise ValueError(f"unknown phantom preset {preset!r}; choose from {', '.join(PRESETS)}")
    voxel, isbi, tps, train, test, mrms = _PRESET_SIZES[preset]
    grid = GRID_CALIBRATION.get(voxel, {})
    calib = RATER_CALIBRATION.get(voxel, {})
    isbi_r = dataclasses.replace(ISBI_RATERS, **calib.get("isbi2015", {}))
    msseg_r = dataclasses.replace(MSSEG_RATERS, **calib.get("msseg", {}))
    mrms_r = dataclasses.replace(MRMS_RATERS, **calib.get("3dmrms", {}))
    return PhantomConfig(
        preset=preset,
        voxel_mm=voxel,
        datasets=(
            DatasetSpec("isbi2015", (("ISB", isbi),), 8.0, 0.9, isbi_r, tps),
            DatasetSpec("msseg2016_train", train, 10.0, 1.2, msseg_r),
            DatasetSpec("msseg2016_test", test, 10.0, 1.2, msseg_r),
            DatasetSpec("3dmrms", (("LJ", mrms),), 13.9, 2.0, mrms_r),
        ),
        centers=_calibrated_centers(grid.get("centers", {})),
        anatomy=AnatomyParams(**grid.get("anatomy", {})),
        lesions=LesionParams(**grid.get("lesions", {})),
    )


def seeded_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and stable (CRC-32) hashes of ``str(key)``.

    Every random draw of the phantom comes from a generator keyed by what it is for (for
    example ``(seed, dataset, subject, "anatomy")``), so a scan's bytes do not depend on
    the order in which scans are simulated or on the number of worker processes.
    """
    words = [int(seed)] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))
