"""The synthetic phantom: layouts, determinism, atomicity, contrast, lesions, raters, realism."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnb import phantom
from msnb.datasets import DATASETS, load_scans
from msnb.masks import combine_masks, dice
from msnb.phantom import generate
from msnb.phantom.realism import REAL_FLAIR, brain_mode, image_realism, within_real

ADAPTER_ROOTS = {name: d.folder for name, d in DATASETS.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "tiny"
    return phantom.generate_phantom(out, preset="tiny", seed=0, workers=2, progress=False)


@pytest.fixture(scope="module")
def meta(tiny) -> dict:
    return json.loads((tiny / "phantom.json").read_text())


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.nii*"))
    }


def _arr(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_every_adapter_reads_the_layout(tiny):
    cfg = phantom.make_config("tiny")
    for spec in cfg.datasets:
        scans = load_scans(spec.key, tiny / ADAPTER_ROOTS[spec.key])
        expected = sum(spec.timepoints[i % len(spec.timepoints)] for i in range(spec.n_subjects))
        assert len(scans) == expected, spec.key
        for s in scans:
            assert s.flair.is_file()
        if spec.key.startswith("msseg"):
            assert all(len(s.raters) == 7 and s.brain_mask is not None for s in scans)
            assert "consensus" in scans[0].masks
    test_centers = {s.center for s in load_scans("msseg2016_test", tiny / "msseg2016")}
    train_centers = {s.center for s in load_scans("msseg2016_train", tiny / "msseg2016")}
    assert "03" in test_centers and "03" not in train_centers
    isbi = load_scans("isbi2015", tiny / "isbi2015")
    assert {s.timepoint for s in isbi} == {"01", "02"}
    assert isbi[0].raters == ["rater1", "rater2"] and isbi[0].brain_mask is None


def test_dtypes_and_zero_background(tiny, meta):
    for s in meta["scans"]:
        folder = tiny / meta["folders"][s["dataset"]]
        img = nib.load(str(folder / s["files"]["flair"]))
        assert img.get_data_dtype() == np.float32
        data = np.asanyarray(img.dataobj)
        tissue = _arr(folder / s["files"]["tissue"])
        brain = tissue > 0
        # skull-stripped convention: brain == nonzero, exactly
        assert np.array_equal(data > 0, brain), s["files"]["flair"]
        assert (data >= 0).all() and np.isfinite(data).all()
        for role, rel in s["files"].items():
            if role not in ("flair", "tissue"):
                m = nib.load(str(folder / rel))
                assert m.get_data_dtype() == np.uint8, rel
                assert set(np.unique(np.asanyarray(m.dataobj))) <= {0, 1}
        if "brain" in s["files"]:
            assert np.array_equal(_arr(folder / s["files"]["brain"]) > 0, brain)


def test_same_seed_same_bytes_any_worker_count(tiny, tmp_path):
    again = phantom.generate_phantom(tmp_path / "again", preset="tiny", seed=0, workers=1,
                                     progress=False)  # fmt: skip
    first = _hashes(tiny)
    assert first and first == _hashes(again)
    a = json.loads((tiny / "phantom.json").read_text())
    b = json.loads((again / "phantom.json").read_text())
    assert a == b


def test_different_seed_changes_output():
    cfg = phantom.make_config("tiny")
    task = phantom.scan_tasks(cfg, 0)[0]
    a = phantom.simulate_scan(cfg, 0, task)
    b = phantom.simulate_scan(cfg, 1, task)
    assert not np.array_equal(a["flair"], b["flair"])
    assert not np.array_equal(a["truth"], b["truth"])


def test_metadata(meta):
    import msnb

    assert meta["msnb_version"] == msnb.__version__
    assert meta["preset"] == "tiny" and meta["seed"] == 0
    params = meta["parameters"]
    assert params["centers"]["M03"]["gamma"] == 0.78
    assert params["lesions"]["decay_mm"] == 11.2
    assert {d["key"] for d in params["datasets"]} == set(ADAPTER_ROOTS)


def test_contrast_ratios_follow_the_table(meta):
    centers = phantom.CENTERS
    gain = phantom.LesionParams().core_gain
    for s in meta["scans"]:
        c = centers[s["center"]]
        # per-subject jitter is +/- 0.03; per-lesion SD 0.10 around the center ratio, whose
        # excess over WM the lesion core raises by up to core_gain / 2
        assert abs(s["contrast_gm_wm"] - c.gm_ratio) < 0.08, s
        excess = c.lesion_ratio - 1
        assert 1 + excess - 0.1 < s["contrast_lesion_wm"] < 1 + excess * (1 + gain / 2) + 0.1, s
    # the center with the highest table ratio measures higher than the one with the lowest
    # (tiny: one or two scans each, whose lesions draw contrasts with SD 0.10 around the
    # table's ratio, so only the table's largest gap, M03 against LJ, is safe to compare)
    present = {s["center"] for s in meta["scans"]}
    high = max(present, key=lambda n: centers[n].lesion_ratio)
    low = min(present, key=lambda n: centers[n].lesion_ratio)
    assert centers[high].lesion_ratio - centers[low].lesion_ratio >= 0.15
    measured = {
        n: np.median([s["contrast_lesion_wm"] for s in meta["scans"] if s["center"] == n])
        for n in (high, low)
    }
    assert measured[high] > measured[low] + 0.05, measured


def test_render_contrast_without_jitter():
    cfg = phantom.make_config("tiny")
    task = phantom.scan_tasks(cfg, 3)[0]
    res = phantom.simulate_scan(cfg, 3, task)
    sub, pv = res["subject"], res["pv"]
    ratios = {"lesion": 1.5, "gm": 1.2, "csf": 0.3}
    img = phantom.render_contrast(sub, pv, np.zeros_like(pv), ratios, cfg.lesions)
    got = phantom.measure_contrast(img, sub, pv)
    assert abs(got["lesion_wm"] - 1.5) < 0.03
    assert abs(got["gm_wm"] - 1.2) < 0.05


def test_lesion_masks(tiny, meta):
    for s in meta["scans"]:
        folder = tiny / meta["folders"][s["dataset"]]
        truth = _arr(folder / s["files"]["truth"]) > 0
        tissue = _arr(folder / s["files"]["tissue"])
        assert truth.any()
        assert not (truth & (tissue == 0)).any(), "lesion outside the brain"
        assert not (truth & (tissue == 4)).any(), "lesion inside a ventricle"
        load = truth.sum() * meta["parameters"]["voxel_mm"] ** 3 / 1000
        assert load == pytest.approx(s["load_ml"])
        assert 0.4 < s["load_ml"] / s["target_load_ml"] < 2.5
        assert 0 <= s["periventricular_share"] <= 1
        for role in ("consensus", "rater1"):
            if role in s["files"]:
                m = _arr(folder / s["files"][role]) > 0
                assert m.any() and not (m & (tissue == 0)).any()
    shares = [s["periventricular_share"] for s in meta["scans"]]
    assert np.median(shares) > 0.3  # periventricular preference


def test_longitudinal_followups_share_lesions(meta, tiny):
    isbi = [s for s in meta["scans"] if s["dataset"] == "isbi2015" and s["subject"] == "01"]
    t1, t2 = (_arr(tiny / "isbi2015" / s["files"]["truth"]) > 0 for s in isbi[:2])
    assert 0.5 < dice(t1, t2) < 1.0  # same lesions, evolved


def test_rater_agreement_in_sane_range(tiny, meta):
    rc, rr = [], []
    for scan in load_scans("msseg2016_test", tiny / "msseg2016"):
        cons = _arr(scan.masks["consensus"]) > 0
        raters = [_arr(scan.masks[r]) > 0 for r in scan.raters]
        assert np.array_equal(cons, combine_masks(raters, method="majority"))
        rc.append(np.mean([dice(r, cons) for r in raters]))
        rr.append(np.mean([dice(a, b) for a, b in itertools.combinations(raters, 2)]))
    assert 0.5 < np.mean(rr) < np.mean(rc) < 0.95
    isbi = [
        dice(_arr(s.masks["rater1"]) > 0, _arr(s.masks["rater2"]) > 0)
        for s in load_scans("isbi2015", tiny / "isbi2015")
    ]
    assert 0.5 < np.mean(isbi) < 0.95
    for s in meta["scans"]:
        if s["dataset"] == "3dmrms":
            folder = tiny / "3dmrms"
            d = dice(_arr(folder / s["files"]["consensus"]), _arr(folder / s["files"]["truth"]))
            assert d > 0.6


def test_staple_consensus_option():
    rng = np.random.default_rng(0)
    base = np.zeros((10, 10, 10), bool)
    base[3:7, 3:7, 3:7] = True
    masks = [base ^ (rng.random(base.shape) < 0.02) for _ in range(5)]
    staple = combine_masks(masks, method="staple")
    assert dice(staple, base) > 0.9
    with pytest.raises(ValueError):
        combine_masks(masks, method="mean")


def test_interrupted_run_leaves_no_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = generate.run_task

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "run_task", failing)
    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated crash"):
        phantom.generate_phantom(out, preset="tiny", workers=1, progress=False)
    assert calls["n"] == 6
    assert list(out.iterdir()) == []  # no dataset, no temporary, no phantom.json


def test_cli_parser():
    from msnb.cli import build_parser

    args = build_parser("phantom").parse_args(["phantom", "--preset", "quick", "--out", "x"])
    assert args.preset == "quick" and args.seed == 0 and args.func is not None
    with pytest.raises(SystemExit):
        build_parser("phantom").parse_args(["phantom", "--preset", "huge", "--out", "x"])


def test_presets():
    quick = phantom.make_config("quick")
    counts = {
        d.key: sum(d.timepoints[i % len(d.timepoints)] for i in range(d.n_subjects))
        for d in quick.datasets
    }
    assert counts == {"isbi2015": 13, "msseg2016_train": 6, "msseg2016_test": 9, "3dmrms": 6}
    std = phantom.make_config("standard")
    counts = {
        d.key: sum(d.timepoints[i % len(d.timepoints)] for i in range(d.n_subjects))
        for d in std.datasets
    }
    assert counts == {"isbi2015": 21, "msseg2016_train": 15, "msseg2016_test": 38, "3dmrms": 30}
    with pytest.raises(ValueError):
        phantom.make_config("huge")


@pytest.fixture(scope="module")
def rows(tiny, meta) -> dict[str, float]:
    """Median realism rows (issue 13) over the tiny preset's scans (3 mm grid, 11 scans)."""
    per_scan = []
    for s in meta["scans"]:
        folder = tiny / meta["folders"][s["dataset"]]
        flair = _arr(folder / s["files"]["flair"])
        truth = _arr(folder / s["files"]["truth"]) > 0
        per_scan.append(image_realism(flair, flair > 0, truth, 3.0))
    return {k: float(np.median([r[k] for r in per_scan])) for k in per_scan[0]}


def test_lesions_overlap_the_normal_brain(rows):
    # before issue 13: non-lesion p95 1.04-1.11, 2-12 % of lesion voxels below it
    assert rows["brain_p95"] > 1.10
    assert rows["lesion_below_p95"] > 0.10
    assert within_real("lesion_median", rows["lesion_median"], slack=0.05)


def test_texture_and_dark_csf(rows):
    # before: median gradient 0.03-0.07, 5th percentile 0.46-0.55 (quick preset)
    assert rows["gradient"] > 0.08
    assert rows["brain_p05"] < REAL_FLAIR["brain_p05"][1] * 1.1


def test_brain_mode_is_the_histogram_peak():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(1.0, 0.05, 20000), rng.normal(0.3, 0.1, 5000),
                             np.full(50, 40.0)])  # fmt: skip
    assert brain_mode(values) == pytest.approx(1.0, abs=0.02)


def test_image_realism_on_a_known_image():
    rng = np.random.default_rng(1)
    img = np.ones((30, 30, 30), np.float32) * 100 + rng.normal(0, 0.5, (30, 30, 30))
    brain = np.zeros(img.shape, bool)
    brain[3:-3, 3:-3, 3:-3] = True
    lesion = np.zeros(img.shape, bool)
    lesion[10:12, 10:12, 10:12] = True  # 8 voxels
    lesion[20:23, 20:23, 20] = True  # 9 voxels
    img[lesion] = 140
    r = image_realism(img, brain, lesion, voxel_mm=2.0)
    assert r["lesion_median"] == pytest.approx(1.4, abs=0.01)
    assert r["lesion_below_p95"] == 0
    assert r["n_lesions"] == 2 and r["lesion_voxels"] == 8.5 and r["lesion_mm3"] == 68
    assert r["brain_p95"] == pytest.approx(1.0 + 1.645 * 0.005, abs=0.003)
    assert 0.002 < r["gradient"] < 0.01


def test_large_loads_grow_confluent_lesions_not_more_sites():
    """Beyond ``max_sites`` ellipsoids grow onto earlier ones (issue 13: real scans have
    27-140 lesions whatever their load)."""
    import dataclasses

    from msnb.phantom.lesions import generate_lesions, rasterize_lesions

    cfg = phantom.make_config("tiny")
    anatomy = dataclasses.replace(cfg.anatomy, fold_corr_mm=0.0)  # no sulci: faster
    tpl = phantom.load_template(3.0, cfg.anatomy)
    sub = phantom.make_subject(tpl, anatomy, cfg.lesions, phantom.seeded_rng(0, "s"))
    base = dataclasses.replace(cfg.lesions, cap_probability=0.0)

    def draw(max_sites):
        p = dataclasses.replace(base, max_sites=max_sites)
        return generate_lesions(sub, p, phantom.seeded_rng(0, "l"), 30.0)

    free, capped = draw(10**6), draw(15)
    assert len(free) == len(capped) > 40
    assert sum(x.volume_mm3 for x in free) == pytest.approx(sum(x.volume_mm3 for x in capped))
    sites = capped[:15]
    for les in capped[15:]:
        gaps = [np.linalg.norm(les.centre - s.centre) / s.size for s in sites]
        k = int(np.argmin(gaps))
        assert gaps[k] <= 1.3 + 1e-6

    def n_components(lesions):
        truth = rasterize_lesions(sub, lesions, base)[1] >= 0.5
        return phantom.lesions.ndi.label(truth, np.ones((3, 3, 3)))[1]

    assert n_components(capped) < 0.6 * n_components(free)


def test_grid_calibration_leaves_quick_and_tiny_unchanged():
    """The 1 mm calibration (issue 13) changes no parameter of the quick and tiny presets,
    nor their recorded ``phantom.json`` parameters (whose hash keys the study's jobs)."""
    from msnb.files import to_jsonable
    from msnb.phantom.config import CENTERS, AnatomyParams, LesionParams

    for preset in ("tiny", "quick"):
        cfg = phantom.make_config(preset)
        assert cfg.anatomy == AnatomyParams() and cfg.lesions == LesionParams()
        assert cfg.centers == CENTERS
        recorded = to_jsonable(generate.recorded_parameters(cfg))
        assert "confluent_power" not in recorded["lesions"]
        # the values the quick study and the README's measurements were made with
        assert recorded["lesions"]["log_voxels_mean"] == 2.92
        assert recorded["lesions"]["max_sites"] == 90
        assert recorded["anatomy"]["texture_corr_mm"] == 1.0
        assert recorded["centers"]["M01"]["lesion_ratio"] == 1.50
        assert recorded["centers"]["ISB"]["noise_pct"] == 6.0


def test_standard_preset_gets_the_documented_1mm_calibration():
    from msnb.files import to_jsonable
    from msnb.phantom.config import CENTERS, GRID_CALIBRATION

    cal = GRID_CALIBRATION[1.0]
    cfg = phantom.make_config("standard")
    for key, value in {**cal["anatomy"], **cal["lesions"]}.items():
        owner = cfg.anatomy if key in cal["anatomy"] else cfg.lesions
        assert getattr(owner, key) == value, key
    for name, c in cfg.centers.items():
        base = CENTERS[name]
        extra = cal["centers"]["center_shifts"].get(name, 0.0)
        assert c.lesion_ratio == pytest.approx(
            base.lesion_ratio + cal["centers"]["lesion_ratio_shift"] + extra
        )
        assert c.noise_pct == pytest.approx(base.noise_pct * cal["centers"]["noise_factor"])
        assert c.gm_ratio == base.gm_ratio and c.texture_pct == base.texture_pct
    recorded = to_jsonable(generate.recorded_parameters(cfg))
    assert recorded["lesions"]["confluent_power"] == cal["lesions"]["confluent_power"]
    # every value is documented (docs/phantom.md section 5's calibration table)
    doc = (Path(__file__).parents[1] / "docs" / "phantom.md").read_text()
    for key, value in {**cal["anatomy"], **cal["lesions"], **cal["centers"]}.items():
        if isinstance(value, dict):  # center_shifts: "ISB +0.08"
            shown = ", ".join(f"{k} {v:+g}" for k, v in value.items())
        elif isinstance(value, tuple):
            shown = ", ".join(f"{v:g}" for v in value)
        else:
            shown = f"{value:g}"
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{key}` |")), "")
        assert shown in line, (key, line)


def test_confluent_lesions_grow_onto_large_sites_with_confluent_power():
    from msnb.phantom.config import LesionParams
    from msnb.phantom.lesions import Lesion, _confluent

    sites = [Lesion("ellipsoid", np.array([x, 0.0, 0.0]), size, 2.0, np.array([1.0, 0, 0]),
                    0.0, vol) for x, size, vol in ((0.0, 1.0, 4.0), (100.0, 8.0, 400.0))]  # fmt: skip

    def onto_large(power):
        p = LesionParams(confluent_power=power)
        grown = _confluent(p, phantom.seeded_rng(0, "c"), [10.0] * 400, sites)
        return np.mean([les.centre[0] > 50 for les in grown])

    assert 0.4 < onto_large(0.0) < 0.6  # uniform (the default)
    assert onto_large(1.0) > 0.97  # in proportion to the volume: 400 / 404


def test_choroid_plexus_fills_each_atrium_and_nothing_else():
    """``choroid_ml`` (on in the standard preset) puts a bright tuft in the back of each
    lateral ventricle; it draws after every other field, which keep their bytes."""
    import dataclasses

    from msnb.phantom.scanner import render_contrast

    cfg = phantom.make_config("tiny")
    off = dataclasses.replace(cfg.anatomy, fold_corr_mm=0.0)
    on = dataclasses.replace(off, choroid_ml=1.0)
    tpl = phantom.load_template(2.0, cfg.anatomy)
    sub0, sub1 = (
        phantom.make_subject(tpl, a, cfg.lesions, phantom.seeded_rng(0, "s")) for a in (off, on)
    )
    assert sub0.choroid is None and phantom.make_config("standard").anatomy.choroid_ml == 1.0
    for field in ("wm", "gm", "csf", "ventricles", "texture", "tissue_texture", "flow"):
        assert np.array_equal(getattr(sub0, field), getattr(sub1, field)), field
    c, vent = sub1.choroid, sub1.ventricles
    assert c[~vent].max() == 0 and c.max() == 1.0
    assert 1.0 < c.sum() * 2.0**3 / 1000 <= 2.0  # two tufts of 1 mL, less the edge cut
    x, y = (sub1.world(a)[np.nonzero(c > 0.5)[a]] for a in (0, 1))
    assert (x > 0).any() and (x < 0).any()  # one per side
    assert np.median(y) < np.quantile(sub1.world(1)[np.nonzero(vent)[1]], 0.25)  # the atria
    ratios = {"lesion": 1.4, "gm": 1.1, "csf": 0.2}
    zero = np.zeros(vent.shape, np.float32)
    s0, s1 = (render_contrast(s, zero, zero, ratios, cfg.lesions) for s in (sub0, sub1))
    core = c > 0.99
    assert np.allclose(s1[core], on.choroid_ratio, atol=0.01)
    assert np.median(s0[core]) < 0.3 and s0[core].max() < 0.6  # ventricle CSF before
    assert np.array_equal(s0[c == 0], s1[c == 0])
