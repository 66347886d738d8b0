"""A study's results table: its columns, validation, loading and the default configuration.

The results table has one row per model x test scan (:data:`REQUIRED_COLUMNS`); a model's
configuration columns say how it was trained, and :func:`is_default` tells the rows trained
with the paper's recipe (the defaults of :class:`msnb.recipe.TrainConfig`). A study also
records the experiments each row serves (``experiment``, tags joined by ``";"``): a model
that serves only ablations (``"ablation:<name>"``) changed a setting, even one the
configuration columns do not show (e.g. ``normalization_reference``), so it is never a
default model.

A study that trains each configuration with several seeds (replicates) records each
replicate as its own model (its own ``model_id``: the first seed's plain id, the others
``<id>__seed<k>``, see :func:`replicate_id`) with the same configuration columns; the
``seed`` column (an integer, 0 in tables that lack it) says which seed, ``precision`` the
precision it was trained and evaluated in (``"none"``, ``"bf16"``; ``""`` when not recorded).
The statistics aggregate replicates by seed (:mod:`msnb.stats.tables`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

# Single datasets without a consensus train on their fallback label when asked for the
# default one (ISBI 2015: the union of its two raters, as the paper); the study records that
# label, and it counts as the default here.
from msnb.datasets import CONSENSUS_FALLBACK
from msnb.metrics import ID_COLUMNS, METRIC_COLUMNS, RESULT_COLUMNS
from msnb.paths import REPO_ROOT, outputs_root
from msnb.recipe import TrainConfig

__all__ = [
    "ABLATION_TAG",
    "EXTERNAL_TAG",
    "CONFIG_COLUMNS",
    "DEFAULTS",
    "METRICS",
    "OPTIONAL_COLUMNS",
    "OPTIONAL_DEFAULTS",
    "REQUIRED_COLUMNS",
    "SCAN_COLUMNS",
    "SEP",
    "STRING_COLUMNS",
    "find_setting_ablations",
    "has_experiment",
    "has_experiment_prefix",
    "is_default",
    "label_setting_ablation",
    "load_results",
    "replicate_id",
    "resolve_output_path",
    "select_single_default",
    "serves_main_experiment",
    "split_names",
    "validate_results",
]

REQUIRED_COLUMNS = tuple(RESULT_COLUMNS)
#: Columns a results table may lack, with the value they get then: the experiments a row
#: serves, its model's training centers, its model's seed and precision.
OPTIONAL_COLUMNS = ("experiment", "train_centers", "seed", "precision")
#: The value :func:`validate_results` gives each of the :data:`OPTIONAL_COLUMNS` when absent.
OPTIONAL_DEFAULTS = {"experiment": "", "train_centers": "", "seed": 0, "precision": ""}
#: Columns kept as strings (``seed`` is an integer column, the metrics are floats).
STRING_COLUMNS = (*ID_COLUMNS, "experiment", "train_centers", "precision")
METRICS = METRIC_COLUMNS
#: The paper's default training settings: the field defaults of
#: :class:`msnb.recipe.TrainConfig` for the configuration columns a results table carries.
DEFAULTS = {
    name: next(f.default for f in fields(TrainConfig) if f.name == name)
    for name in ("label", "normalization", "architecture", "encoder")
}
#: Columns that identify a training configuration.
CONFIG_COLUMNS = ("train_datasets", "label", "normalization", "architecture", "encoder")
#: Columns that identify a test scan.
SCAN_COLUMNS = ("test_dataset", "subject", "timepoint")
#: Joins dataset (and center) names in ``train_datasets`` and ``train_centers``.
SEP = "+"
#: Prefix of the ``experiment`` tag of an ablation's models (``"ablation:linear"``).
ABLATION_TAG = "ablation:"
#: Prefix of the ``experiment`` tag of a method outside msnb (``"external:nnunet"``): a study's
#: ``external`` entry, scored by :mod:`msnb.external`.
EXTERNAL_TAG = "external:"
_SEED_SUFFIX = re.compile(r"__seed\d+$")


def validate_results(results: pd.DataFrame) -> pd.DataFrame:
    """Check a results table and return a cleaned copy.

    Parameters
    ----------
    results : DataFrame, shape (n_rows, >= 17)
        One row per model x test scan with the :data:`REQUIRED_COLUMNS`.

    Returns
    -------
    DataFrame
        Identifier columns as strings (``"01"`` stays ``"01"``), metric columns as floats,
        ``seed`` as integers; ``experiment``, ``train_centers`` and ``precision`` added
        (empty) and ``seed`` (0) when absent, an empty ``seed`` read as 0.

    Raises
    ------
    ValueError
        Missing columns, or the same model scored twice on the same scan.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks columns: {', '.join(missing)}")
    df = results.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = OPTIONAL_DEFAULTS[col]
    for col in STRING_COLUMNS:
        df[col] = df[col].astype("string").fillna("").astype(str)
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").fillna(0).astype(int)
    for col in METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    dup = df.duplicated(["model_id", *SCAN_COLUMNS])
    if dup.any():
        first = df.loc[dup, ["model_id", *SCAN_COLUMNS]].iloc[0].tolist()
        raise ValueError(
            f"results table has {int(dup.sum())} duplicate model x scan rows, e.g. {first}"
        )
    return df.reset_index(drop=True)


def load_results(path: str | Path, *, missing_ok: bool = False) -> pd.DataFrame:
    """Read and validate a ``results.csv`` (identifier columns kept as strings).

    Parameters
    ----------
    path : path-like
    missing_ok : bool, default False
        When the file does not exist, warn and return an empty table with the right columns
        (every table is then empty and every test says ``not enough data``) instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        if not missing_ok:
            raise FileNotFoundError(f"{path}: results table not found")
        warnings.warn(f"{path}: results table not found; all tables will be empty", stacklevel=2)
        return validate_results(pd.DataFrame(columns=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]))
    dtypes = dict.fromkeys(STRING_COLUMNS, str)
    df = pd.read_csv(
        path, dtype=dtypes, keep_default_na=False, na_values={m: [""] for m in METRICS}
    )
    return validate_results(df)


def replicate_id(model_ids: pd.Series) -> pd.Series:
    """The id shared by a model's seed replicates: ``model_id`` without its ``__seed<k>``
    suffix (the first seed's plain id, :func:`msnb.recipe.model_id_for`)."""
    return model_ids.astype(str).str.replace(_SEED_SUFFIX, "", regex=True)


def resolve_output_path(path: str | Path) -> Path:
    """Resolve a notebook's path parameter.

    Absolute paths are kept; a relative path starting with ``outputs/`` is placed under
    :func:`msnb.paths.outputs_root` (so ``MSNB_OUTPUTS`` applies); any other relative path is
    taken from the repository root (notebooks run with their own folder as working directory).
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if p.parts and p.parts[0] == "outputs":
        return outputs_root().joinpath(*p.parts[1:])
    return REPO_ROOT / p


def split_names(value: str) -> list[str]:
    """The names joined by :data:`SEP` in ``value`` (``"a+b"`` -> ``["a", "b"]``)."""
    return [v for v in str(value).split(SEP) if v]


def has_experiment(results: pd.DataFrame, tag: str) -> pd.Series:
    """Boolean mask of rows whose ``experiment`` tags (joined by ``";"``) include ``tag``."""
    if "experiment" not in results.columns:
        return pd.Series(False, index=results.index)
    tags = results["experiment"].fillna("").astype(str).str.split(";")
    return tags.map(lambda t: tag in t).astype(bool)


def has_experiment_prefix(results: pd.DataFrame, prefix: str) -> pd.Series:
    """Boolean mask of rows with an ``experiment`` tag that starts with ``prefix``."""
    if "experiment" not in results.columns:
        return pd.Series(False, index=results.index)
    tags = results["experiment"].fillna("").astype(str).str.split(";")
    return tags.map(lambda t: any(x.startswith(prefix) for x in t)).astype(bool)


def serves_main_experiment(results: pd.DataFrame) -> pd.Series:
    """Boolean mask of rows whose model serves an experiment other than an ablation.

    True where ``experiment`` (tags joined by ``";"``) has a tag that does not start with
    :data:`ABLATION_TAG`, and where it is empty or absent (a table without tags).
    """
    if "experiment" not in results.columns:
        return pd.Series(True, index=results.index)
    tags = results["experiment"].fillna("").astype(str)
    return tags.map(
        lambda t: not t or any(not x.startswith(ABLATION_TAG) for x in t.split(";"))
    ).astype(bool)


def is_default(
    results: pd.DataFrame, *, ignore: Sequence[str] = (), ablations: bool = False
) -> pd.Series:
    """Boolean mask of rows trained with the paper's :data:`DEFAULTS` (except ``ignore``).

    The label of a single dataset in :data:`msnb.datasets.CONSENSUS_FALLBACK` (ISBI 2015's
    ``union``) counts as the default label.

    Parameters
    ----------
    results : DataFrame
        A results table, or any table with the configuration columns (and ``experiment``).
    ignore : sequence of str
        Configuration columns left unchecked.
    ablations : bool, default False
        Keep rows whose model serves only ablations (False: only the rows of
        :func:`serves_main_experiment`); an ablation's models differ from the defaults in a
        setting, shown in the configuration columns or not.
    """
    mask = pd.Series(True, index=results.index) if ablations else serves_main_experiment(results)
    for col, value in DEFAULTS.items():
        if col in ignore:
            continue
        ok = results[col] == value
        if col == "label":
            fallback = results["train_datasets"].map(CONSENSUS_FALLBACK).fillna("")
            ok |= results[col] == fallback
        mask &= ok
    return mask


def select_single_default(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of single-dataset models trained with the paper's default settings."""
    single = ~results["train_datasets"].str.contains(SEP, regex=False)
    return results[single & is_default(results)]


def find_setting_ablations(results: pd.DataFrame) -> list[str]:
    """Ablations whose models show the default configuration columns: the setting they
    change is not a results column (e.g. ``normalization_reference``).

    Returns
    -------
    list of str
        The names ``<name>`` of their ``"ablation:<name>"`` experiment tags, sorted.
    """
    if "experiment" not in results.columns:
        return []
    tags = {t for v in results["experiment"] for t in str(v).split(";")}
    names = []
    for tag in sorted(t for t in tags if t.startswith(ABLATION_TAG)):
        rows = results[has_experiment(results, tag)]
        if is_default(rows, ablations=True).all():
            names.append(tag.removeprefix(ABLATION_TAG))
    return names


def label_setting_ablation(results: pd.DataFrame, name: str) -> pd.DataFrame:
    """``results`` with a ``setting`` column: ``"default"`` on the default models, ``name``
    on the models of the ablation ``"ablation:<name>"``, ``""`` elsewhere; for
    :func:`~msnb.stats.tables.compute_ablation_table` and ``compute_ablation_tests`` with
    ``factor="setting", levels=("default", name)`` (:mod:`msnb.stats.tables`)."""
    tagged = has_experiment(results, ABLATION_TAG + name)
    setting = np.where(tagged, name, np.where(is_default(results), "default", ""))
    return results.assign(setting=setting)
