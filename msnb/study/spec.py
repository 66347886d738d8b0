"""The study file: its schema, and :func:`load_study`, which reads and validates it.

Every check of a study file lives here, so :func:`msnb.study.grid.expand_study` can expand
a study without checking it again. Every error is a :class:`StudyError`, one line naming
the file, the line and the key (``quick.yaml:23: experiments.single: unknown dataset
'brats'``). The training settings are checked against :class:`msnb.recipe.TrainConfig`:
their types from its annotations, their choices and ranges from
:func:`msnb.recipe.setting_problem`. Reading the file refuses a key given twice in one
mapping. Dataset and ablation names follow :data:`NAME_PATTERN`. Loading reads no dataset
(a dry run needs none): :func:`check_dataset_roots` checks the dataset folders before a run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml

from msnb.datasets import ADAPTERS, DATASETS
from msnb.external import PREDICTION_GLOB, compile_pattern
from msnb.paths import data_root, outputs_root
from msnb.recipe import CHOICES, TrainConfig, setting_problem
from msnb.sources import phantom_root

__all__ = [
    "EXPERIMENT_KINDS",
    "EXTERNAL_KEYS",
    "LABELS",
    "NAME_PATTERN",
    "REPLICATE_KEYS",
    "SET_ONLY_KEYS",
    "TRAINING_CHOICES",
    "TRAINING_DEFAULTS",
    "TRAINING_KEYS",
    "Study",
    "StudyError",
    "as_list",
    "check_dataset_roots",
    "load_study",
]

#: Dataset names, ablation names and folder mask names used as labels: lower-case letters
#: and digits, with single ``_`` or ``-`` between them (``msseg2016_train``, ``3dmrms``).
#: They become parts of model ids (``a+b__quantile__...``), job names (``<model>__<test>``)
#: and file names, so ``+``, ``/``, ``.``, ``__``, spaces and upper case (which would
#: collide on a case-insensitive disk) are refused.
NAME_PATTERN = r"[a-z0-9]+(?:[_-][a-z0-9]+)*"
#: The :class:`msnb.recipe.TrainConfig` settings a study file may set, in this order.
_SETTINGS = (
    "architecture",
    "encoder",
    "encoder_weights",
    "size",
    "epochs",
    "batch_size",
    "lr",
    "normalization",
    "label",
    "device",
    "time_budget_s",
    "seed",
    "val_fraction",
    "pos_weight",
    "max_slices_per_epoch",
    "max_val_slices",
    "foreground_fraction",
    "lr_step_epochs",
    "lr_gamma",
    "lr_warmup_steps",
    "selection_metric",
    "normalization_reference",
    "slice_crop",
    "min_brain_fraction",
    "autocast",
    "template",
)
_HINTS = typing.get_type_hints(TrainConfig)
#: The training settings a study file may set, with their accepted types: those of
#: :class:`msnb.recipe.TrainConfig`'s annotations (a float also takes an integer), but
#: ``template``, which is ``{dataset, subject[, timepoint]}`` in the file and its scan id
#: in :attr:`Study.training`.
TRAINING_KEYS = {
    key: (dict, type(None)) if key == "template" else typing.get_args(_HINTS[key]) or _HINTS[key]
    for key in _SETTINGS
}
#: The settings of :data:`TRAINING_KEYS` that take one of a few values
#: (:data:`msnb.recipe.CHOICES`).
TRAINING_CHOICES = {
    **{k: v for k, v in CHOICES.items() if k in TRAINING_KEYS},
    # a study runs in one declared precision on every machine: not "auto" (device-dependent)
    "autocast": tuple(m for m in CHOICES["autocast"] if m != "auto"),
}
#: Settings the training notebook receives only when they differ from their default: they
#: came after the first studies ran, whose jobs thus keep their parameters and digests.
#: ``autocast`` is not one: every training job declares its precision (its default changed
#: from the machine-dependent ``"auto"`` to float32, so older trainings run again).
SET_ONLY_KEYS = (
    "max_val_slices",
    "foreground_fraction",
    "lr_step_epochs",
    "lr_gamma",
    "lr_warmup_steps",
    "selection_metric",
    "normalization_reference",
    "slice_crop",
    "min_brain_fraction",
    "template",
)
_RECIPE = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
#: Defaults of :data:`TRAINING_KEYS`: those of :class:`msnb.recipe.TrainConfig`.
TRAINING_DEFAULTS = {key: _RECIPE[key] for key in TRAINING_KEYS}
_TEMPLATE_KEYS = ("dataset", "subject", "timepoint")
#: Keys that ask for replicate trainings, in ``training`` and in an experiment (its override):
#: ``seeds: [0, 1, 2]``, or ``replicates: 3`` (the seeds ``seed``, ``seed + 1``, ...).
REPLICATE_KEYS = ("seeds", "replicates")
EXPERIMENT_KINDS = ("single", "combinations", "labels", "ablations")
#: The labels of the ``labels`` experiment when the study file names none.
LABELS = ("rater1", "rater2", "union")
_TOP_LEVEL = ("name", "description", "datasets", "training", "experiments", "external")
#: The keys of an ``external`` entry (:func:`_parse_external`) and their defaults (None:
#: required).
EXTERNAL_KEYS = {
    "method": None,
    "predictions": None,
    "train": [],
    "label": "consensus",
    "pattern": "",
    "glob": PREDICTION_GLOB,
    "resample": False,
    "binarize": False,
    "allow_missing": False,
}
_ABLATED = ("single", "combinations", "labels")  # the experiments an ablation can repeat


class StudyError(ValueError):
    """A malformed study file; the message (one line) names the file, the line and the key."""


@dataclass
class Study:
    """A parsed, validated study file.

    Attributes
    ----------
    name : str
        The study's name (the folder of its outputs).
    path : Path or None
        The study file.
    datasets : dict
        ``{name: {"phantom", "seed"}}`` or ``{name: {"adapter", "root", "options"}}``, with
        ``"n4": True`` where the file asks for N4 correction.
    training : dict
        Every key of :data:`TRAINING_KEYS`: the file's settings over :data:`TRAINING_DEFAULTS`;
        ``template`` is the template scan's id ``"<dataset>/<subject>/<timepoint>"`` (or None).
    experiments : dict
        The ``experiments`` mapping as written in the file, each ablation's ``change`` parsed
        as ``training`` is; an experiment that asks for its own replicates (``seeds`` or
        ``replicates``) holds them as ``seeds``, a list.
    seeds : list of int
        The seeds of the replicate trainings of every experiment that sets none
        (``training.seeds``, or ``training.replicates`` seeds from ``training.seed``); one seed,
        ``training.seed``, by default. ``training["seed"]`` is the first.
    out_dir : Path
        ``<out_root>/<name>``.
    raw : dict
        The whole file as parsed.
    external : list of dict
        The methods whose masks the study scores (``external``), each with every key of
        :data:`EXTERNAL_KEYS` (``predictions``: ``{test dataset: folder}``, expanded).
    lines : dict
        ``{key: line}``: the 1-based line of each key and list item of the file, named as
        messages name them (``training.epochs``, ``experiments.combinations[0].train[1]``).
    """

    name: str
    path: Path | None
    datasets: dict[str, dict]
    training: dict
    experiments: dict
    out_dir: Path
    raw: dict = field(repr=False, default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    lines: dict[str, int] = field(repr=False, default_factory=dict)
    external: list[dict] = field(default_factory=list)

    def line(self, key: str) -> int | None:
        """The line of ``key`` in the file, or of its closest enclosing key (None: unknown)."""
        return _Source(str(self.path), self.lines).line(key)

    def error(self, key: str, problem: str) -> StudyError:
        """A :class:`StudyError` ``<file>:<line>: <key>: <problem>``, to raise."""
        return _Source(str(self.path), self.lines).error(key, problem)


def load_study(path: str | os.PathLike, *, out_root: str | os.PathLike | None = None) -> Study:
    """Read and validate a study file; every error names the file, the line and the key.

    Parameters
    ----------
    path : path-like
        The YAML study file.
    out_root : path-like, optional
        Folder that receives ``<name>/`` (default :func:`msnb.paths.outputs_root`).

    Raises
    ------
    StudyError
        The file is missing, is not UTF-8 YAML, repeats a key, or breaks the schema.
    """
    path = Path(path)
    raw, lines = _read_yaml(path)
    where = _Source(str(path), lines)
    unknown = set(raw) - set(_TOP_LEVEL)
    if unknown:
        _fail(where, sorted(unknown)[0], f"unknown top-level key (known: {', '.join(_TOP_LEVEL)})")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        _fail(where, "name", f"expected a simple name (letters, digits, _ . -), got {name!r}")
    datasets = _parse_datasets(where, raw.get("datasets"))
    given = raw.get("training") or {}
    training = {
        **TRAINING_DEFAULTS,
        **_parse_training(where, "training", _without_replicates(given), datasets),
    }
    seeds = _parse_seeds(where, "training", given, training["seed"]) or [training["seed"]]
    training["seed"] = seeds[0]
    _check_reference(where, "training", training)
    external = _parse_external(where, raw.get("external"), datasets)
    if raw.get("experiments") is not None or not external:  # a study of external masks only
        _check_experiments(where, raw.get("experiments"), datasets)
    exps = dict(raw.get("experiments") or {})
    experiments = _parse_experiment_seeds(where, exps, training["seed"])
    if "ablations" in experiments:
        experiments["ablations"] = _parse_ablations(where, experiments, datasets, training)
    return Study(
        name=name,
        path=path,
        datasets=datasets,
        training=training,
        experiments=experiments,
        out_dir=Path(out_root or outputs_root()) / name,
        raw=raw,
        seeds=seeds,
        lines=lines,
        external=external,
    )


def _without_replicates(values):
    """A mapping of settings without its :data:`REPLICATE_KEYS` (other values unchanged)."""
    if not isinstance(values, dict):
        return values
    return {k: v for k, v in values.items() if k not in REPLICATE_KEYS}


def _parse_seeds(where: _Source, prefix: str, values, start: int) -> list[int] | None:
    """The replicate seeds ``values`` asks for (:data:`REPLICATE_KEYS`); None if it asks none.

    ``prefix`` is the key of ``values`` in the file; ``replicates: n`` gives the seeds
    ``start`` to ``start + n - 1``.

    Raises
    ------
    StudyError
        Both keys given, a non-integer, repeated or out-of-range seed (see
        :data:`msnb.recipe.RANGES`), or fewer than one replicate.
    """
    if not isinstance(values, dict) or not any(k in values for k in REPLICATE_KEYS):
        return None
    if all(k in values for k in REPLICATE_KEYS):
        _fail(where, f"{prefix}.replicates", "give either seeds or replicates, not both")
    if "replicates" in values:
        n = values["replicates"]
        _check_type(where, f"{prefix}.replicates", n, int)
        if n < 1:
            _fail(where, f"{prefix}.replicates", f"expected at least 1, got {n}")
        problem = setting_problem("seed", int(start) + n - 1)
        if problem:
            _fail(where, f"{prefix}.replicates", f"its last seed: {problem}")
        return [int(start) + i for i in range(n)]
    seeds = values["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
    ):
        _fail(where, f"{prefix}.seeds", f"expected a non-empty list of integers, got {seeds!r}")
    for i, seed in enumerate(seeds):
        problem = setting_problem("seed", seed)
        if problem:
            _fail(where, f"{prefix}.seeds[{i}]", problem)
    if len(set(seeds)) != len(seeds):
        _fail(where, f"{prefix}.seeds", f"a seed is repeated: {seeds}")
    if "seed" in values and values["seed"] != seeds[0]:
        _fail(where, f"{prefix}.seed", f"seeds starts at {seeds[0]}: leave seed out")
    return list(seeds)


def _parse_experiment_seeds(where: _Source, exps: dict, seed: int) -> dict:
    """``exps`` with each experiment's own replicates as ``seeds`` (see :class:`Study`).

    The ``labels`` mapping, each ``combinations`` item and each ablation may set ``seeds``
    or ``replicates`` (counted from the study's first seed).
    """
    out = dict(exps)
    if isinstance(out.get("labels"), dict):
        out["labels"] = _own_seeds(where, "experiments.labels", out["labels"], seed)
    for kind in ("combinations", "ablations"):
        if isinstance(out.get(kind), list):
            out[kind] = [
                _own_seeds(where, f"experiments.{kind}[{i}]", item, seed)
                for i, item in enumerate(out[kind])
            ]
    return out


def _own_seeds(where: _Source, key: str, item, seed: int):
    """An experiment item with its :data:`REPLICATE_KEYS` parsed into ``seeds``."""
    if not isinstance(item, dict) or not any(k in item for k in REPLICATE_KEYS):
        return item
    return {**_without_replicates(item), "seeds": _parse_seeds(where, key, item, seed)}


def _parse_training(where: _Source, prefix: str, values, datasets: dict) -> dict:
    """Check a mapping of training settings at key ``prefix``; return it parsed.

    Checks each setting's name, type (:data:`TRAINING_KEYS`), choice and range
    (:func:`_setting_problem`); ``template`` becomes its scan id (see :class:`Study`).

    Raises
    ------
    StudyError
        Naming ``<where>:<line>: <prefix>.<setting>``.
    """
    if not isinstance(values, dict):
        _fail(where, prefix, "expected a mapping")
    parsed = dict(values)
    for k, v in values.items():
        key = f"{prefix}.{k}"
        if k not in TRAINING_KEYS:
            _fail(where, key, f"unknown training setting (known: {', '.join(TRAINING_KEYS)})")
        _check_type(where, key, v, TRAINING_KEYS[k])
        if k == "autocast" and v == "auto":
            _fail(
                where,
                key,
                "a study declares its precision: none (float32), bf16 or fp16, not auto, "
                "which depends on the machine",
            )
        problem = None if k == "template" else _setting_problem(k, v, datasets)
        if problem:
            _fail(where, key, problem)
    if "template" in values:
        parsed["template"] = _parse_template(
            where, f"{prefix}.template", values["template"], datasets
        )
    return parsed


def _setting_problem(name: str, value, datasets: dict) -> str | None:
    """:func:`msnb.recipe.setting_problem` with a study's choices (:data:`TRAINING_CHOICES`).

    A study declares its precision (``autocast`` is not ``"auto"``), and its folder datasets'
    own mask names (``options.masks``, following :data:`NAME_PATTERN`) are labels too.
    """
    if name == "label" and value in _folder_masks(datasets):
        return None
    if name == "autocast" and value not in TRAINING_CHOICES["autocast"]:
        return f"expected one of {', '.join(TRAINING_CHOICES['autocast'])}, got {value!r}"
    return setting_problem(name, value)


def _folder_masks(datasets: dict) -> set[str]:
    """The mask names the study's folder datasets declare (``options.masks``) as names."""
    masks = set()
    for spec in datasets.values():
        declared = (spec.get("options") or {}).get("masks")
        if isinstance(declared, dict):
            masks |= {m for m in declared if isinstance(m, str) and re.fullmatch(NAME_PATTERN, m)}
    return masks


def _parse_template(where: _Source, key: str, value: dict | None, datasets: dict) -> str | None:
    """The scan id ``"<dataset>/<subject>/<timepoint>"`` of ``{dataset, subject[, timepoint]}``."""
    if value is None:
        return None
    extra = set(value) - set(_TEMPLATE_KEYS)
    if extra:
        _fail(
            where, f"{key}.{sorted(extra)[0]}", f"unknown key (known: {', '.join(_TEMPLATE_KEYS)})"
        )
    dataset = value.get("dataset")
    if dataset not in datasets:
        _fail(
            where,
            f"{key}.dataset",
            f"expected one of the study's datasets ({', '.join(datasets)}), got {dataset!r}",
        )
    parts = [dataset]
    for part, default in (("subject", None), ("timepoint", "01")):
        text = value.get(part, default)
        if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
            _fail(where, f"{key}.{part}", f'expected a quoted id such as "08_03", got {text!r}')
        parts.append(text)
    return "/".join(parts)


def _check_reference(where: _Source, prefix: str, settings: dict) -> None:
    """``normalization_reference: template`` needs the template scan (``template``)."""
    if settings["normalization_reference"] == "template" and not settings["template"]:
        _fail(
            where,
            f"{prefix}.normalization_reference",
            "'template' needs the template scan: template: {dataset: NAME, subject: ID}",
        )


def as_list(value: str | list[str]) -> list[str]:
    """A study-file entry that is one name or a list of names, as a list."""
    return [value] if isinstance(value, str) else list(value)


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Source:
    """The study file as messages name it: its path and the line of each key (:class:`Study`)."""

    path: str
    lines: dict[str, int]

    def line(self, key: str) -> int | None:
        """The line of ``key``, or of its closest enclosing key that the file has."""
        while key:
            if key in self.lines:
                return self.lines[key]
            parent = re.sub(r"(\[\d+\]|\.[^.\[\]]*)$", "", key)
            key = "" if parent == key else parent
        return None

    def error(self, key: str, problem: str) -> StudyError:
        line = self.line(key)
        return StudyError(f"{self.path}{'' if line is None else f':{line}'}: {key}: {problem}")


class _StudyLoader(yaml.SafeLoader):
    """yaml's SafeLoader that refuses a key given twice in a mapping, at any depth, and
    notes the line of every key and list item (``lines``, keyed as :class:`Study` says).

    YAML's merge key (``<<``) is left to the SafeLoader: keys written beside it override
    the merged ones, as YAML intends.
    """

    def __init__(self, stream, path: str):
        super().__init__(stream)
        self.path = path
        self.lines: dict[str, int] = {}

    def construct_document(self, node):
        self._note(node, "", set())
        return super().construct_document(node)

    def _note(self, node, key: str, seen: set) -> None:
        if id(node) in seen:  # an alias of a node already noted (or a recursive one)
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines.setdefault(f"{key}[{i}]", item.start_mark.line + 1)
                self._note(item, f"{key}[{i}]", seen)
        elif isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, value in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                name = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                path = f"{key}.{name}" if key else str(name)
                if name in first:
                    raise _Source(self.path, {path: line}).error(
                        path,
                        f"duplicate key: set at lines {first[name]} and {line} (YAML would "
                        "silently keep the last); give it once",
                    )
                first[name] = line
                self.lines.setdefault(path, line)
                self._note(value, path, seen)


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """The parsed study file and the line of each of its keys (see :class:`_StudyLoader`)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"{where}: study file not found") from None
    except IsADirectoryError:
        raise StudyError(f"{where}: is a directory, not a study file") from None
    except UnicodeDecodeError as exc:
        raise StudyError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise StudyError(f"{where}: cannot read the study file ({exc.strerror})") from None
    loader = _StudyLoader(text, where)
    try:
        raw = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}" if mark else ""
        what = "; ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise StudyError(f"{where}{at}: not valid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise StudyError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: expected a mapping at the top level")
    return raw, loader.lines


def _fail(where: _Source, key: str, problem: str) -> NoReturn:
    raise where.error(key, problem)


def _check_type(where: _Source, key: str, value, types) -> None:
    types = types if isinstance(types, tuple) else (types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, types):
        names = "/".join("null" if t is type(None) else t.__name__ for t in types)
        _fail(where, key, f"expected {names}, got {value!r}")


def _expand_env(value):
    """``value`` with ``${MSNB_DATA}`` (default included) and other variables expanded."""
    if isinstance(value, str):
        return os.path.expandvars(re.sub(r"\$\{MSNB_DATA\}", str(data_root()), value))
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


# --------------------------------------------------------------------------- datasets


def _parse_datasets(where: _Source, datasets) -> dict[str, dict]:
    if not isinstance(datasets, dict) or not datasets:
        _fail(where, "datasets", "expected a non-empty mapping of dataset name -> location")
    parsed = {}
    for name, spec in datasets.items():
        key = f"datasets.{name}"
        _check_name(where, key, name, "dataset name")
        if not isinstance(spec, dict):
            _fail(where, key, "expected a mapping with 'phantom' or 'adapter' and 'root'")
        if "phantom" in spec:
            parsed[name] = _parse_phantom(where, key, name, spec)
        else:
            parsed[name] = _parse_folder(where, key, name, spec)
    return parsed


def _parse_phantom(where: _Source, key: str, name: str, spec: dict) -> dict:
    """``{"phantom", "seed"}`` of a generated dataset (see :func:`msnb.sources.resolve_dataset`)."""
    if name not in DATASETS:
        _fail(where, key, f"the phantom provides only {', '.join(DATASETS)}")
    try:
        phantom_root(spec["phantom"])
    except ValueError as exc:
        _fail(where, f"{key}.phantom", str(exc))
    _check_type(where, f"{key}.seed", spec.get("seed", 0), int)
    extra = set(spec) - {"phantom", "seed", "n4"}
    if extra:
        _fail(where, f"{key}.{sorted(extra)[0]}", "unknown key for a phantom dataset")
    return {"phantom": spec["phantom"], "seed": int(spec.get("seed", 0)), **_n4(where, key, spec)}


def _parse_folder(where: _Source, key: str, name: str, spec: dict) -> dict:
    """``{"adapter", "root", "options"}`` of a dataset in a folder (``root`` expanded)."""
    adapter = spec.get("adapter", DATASETS[name].adapter if name in DATASETS else None)
    if adapter not in ADAPTERS:
        _fail(
            where, f"{key}.adapter", f"unknown adapter {adapter!r} (known: {', '.join(ADAPTERS)})"
        )
    if not isinstance(spec.get("root"), str):
        _fail(where, f"{key}.root", "expected the dataset folder")
    options = spec.get("options", {})
    if not isinstance(options, dict):
        _fail(where, f"{key}.options", "expected a mapping of adapter options")
    extra = set(spec) - {"adapter", "root", "options", "n4"}
    if extra:
        _fail(where, f"{key}.{sorted(extra)[0]}", "unknown key for a dataset folder")
    root = _expand_env(spec["root"])
    return {"adapter": adapter, "root": root, "options": options, **_n4(where, key, spec)}


def _check_name(where: _Source, key: str, name, what: str) -> None:
    """``name`` follows :data:`NAME_PATTERN` (``what``: ``"dataset name"``, ...)."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        _fail(
            where,
            key,
            f"{what} {name!r}: use lower-case letters and digits with single _ or - between "
            f"them ({NAME_PATTERN}); it becomes part of model ids and file names, so + / . "
            "__ and spaces are refused",
        )


def check_dataset_roots(study: Study) -> None:
    """Check that every folder dataset's ``root``, and every prediction folder of ``external``,
    is a readable folder, before any job runs.

    :func:`load_study` reads no dataset, so that a dry run needs none; a run calls this
    first. Phantom datasets are generated on demand and are not checked.

    Raises
    ------
    StudyError
        ``<file>:<line>: datasets.<name>.root: <root> does not exist`` (or is not a folder,
        or cannot be read).
    """
    for name, spec in study.datasets.items():
        if "root" not in spec:
            continue
        root = Path(spec["root"]).expanduser()
        problem = _folder_problem(root)
        if problem is None:
            continue
        raise study.error(f"datasets.{name}.root", f"{root} {problem}")
    for i, entry in enumerate(study.external):
        for test, folder in entry["predictions"].items():
            problem = _folder_problem(Path(folder).expanduser())
            if problem:
                raise study.error(f"external[{i}].predictions.{test}", f"{folder} {problem}")


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be read as a folder (None: it can)."""
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is not a folder"
    if not os.access(folder, os.R_OK | os.X_OK):
        return "cannot be read (permissions)"
    return None


def _n4(where: _Source, key: str, spec: dict) -> dict:
    """``{"n4": True}`` when the spec asks for N4 correction, else ``{}`` (the spec unchanged)."""
    n4 = spec.get("n4", False)
    if not isinstance(n4, bool):
        _fail(where, f"{key}.n4", f"expected true or false, got {n4!r}")
    return {"n4": True} if n4 else {}


# --------------------------------------------------------------------------- experiments


def _check_experiments(where: _Source, exps, datasets: dict) -> None:
    """Check the ``experiments`` mapping: its kinds, then each kind's shape and references."""
    if not isinstance(exps, dict) or not exps:
        _fail(
            where, "experiments", f"expected a mapping with some of {', '.join(EXPERIMENT_KINDS)}"
        )
    for k in exps:
        if k not in EXPERIMENT_KINDS:
            _fail(
                where,
                f"experiments.{k}",
                f"unknown experiment kind (known: {', '.join(EXPERIMENT_KINDS)})",
            )
    if "single" in exps:
        _check_names(where, "experiments.single", exps["single"], datasets)
    if "combinations" in exps:
        _check_combinations(where, exps["combinations"], datasets)
    if "labels" in exps:
        _check_labels(where, exps["labels"], datasets)


def _check_names(where: _Source, key: str, value, known: dict) -> None:
    """Dataset names: one name or a non-empty list of distinct names, each one of ``known``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        _fail(where, key, "expected a list of dataset names")
    for v in value:
        if v not in known:
            _fail(where, key, f"unknown dataset {v!r} (declared: {', '.join(known)})")
    _check_distinct(where, key, value, "dataset")


def _check_distinct(where: _Source, key: str, values: list, what: str) -> None:
    """No item of the list ``values`` (at ``key``) repeats an earlier one."""
    for i, v in enumerate(values):
        if v in values[:i]:
            first = f"{key}[{values.index(v)}]"
            _fail(where, f"{key}[{i}]", f"{what} {v!r} is repeated (also {first}): give it once")


def _check_combinations(where: _Source, items, datasets: dict) -> None:
    if not isinstance(items, list):
        _fail(where, "experiments.combinations", "expected a list of {train: [...], test: [...]}")
    for i, item in enumerate(items):
        key = f"experiments.combinations[{i}]"
        if not isinstance(item, dict) or set(item) - {"train", "test", *REPLICATE_KEYS}:
            _fail(where, key, "expected a mapping with 'train', 'test' (and seeds or replicates)")
        _check_names(where, f"{key}.train", item.get("train"), datasets)
        _check_names(where, f"{key}.test", item.get("test"), datasets)


def _check_labels(where: _Source, spec, datasets: dict) -> None:
    key = "experiments.labels"
    if not isinstance(spec, dict) or "dataset" not in spec:
        _fail(where, key, "expected a mapping with 'dataset', 'labels' and optionally 'test'")
    dataset = spec["dataset"]
    _check_names(where, f"{key}.dataset", dataset, datasets)
    if isinstance(dataset, list) and len(dataset) != 1:
        _fail(where, f"{key}.dataset", "expected one dataset")
    labels = spec.get("labels", list(LABELS))
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        _fail(where, f"{key}.labels", "expected a list of labels")
    for i, label in enumerate(labels):
        problem = _setting_problem("label", label, datasets)
        if problem:
            _fail(where, f"{key}.labels[{i}]", problem)
    _check_distinct(where, f"{key}.labels", labels, "label")
    test = spec.get("test") or [d for d in datasets if d not in as_list(dataset)]
    _check_names(where, f"{key}.test", test, datasets)


def _parse_ablations(where: _Source, exps: dict, datasets: dict, training: dict) -> list[dict]:
    """The ablations, each ``change`` parsed as ``training`` is (see :func:`_parse_training`)."""
    ablations = exps.get("ablations") or []
    if not isinstance(ablations, list):
        _fail(where, "experiments.ablations", "expected a list of {name, change, of}")
    parsed, names = [], {}
    for i, abl in enumerate(ablations):
        key = f"experiments.ablations[{i}]"
        if not isinstance(abl, dict) or not isinstance(abl.get("name"), str):
            _fail(where, f"{key}.name", "expected a name")
        _check_name(where, f"{key}.name", abl["name"], "ablation name")
        if abl["name"] in names:
            _fail(
                where,
                f"{key}.name",
                f"ablation name {abl['name']!r} is repeated (also {names[abl['name']]}.name)",
            )
        names[abl["name"]] = key
        change = _parse_training(where, f"{key}.change", abl.get("change"), datasets)
        if not change:
            _fail(where, f"{key}.change", "expected at least one setting to change")
        _check_reference(where, f"{key}.change", {**training, **change})
        of = abl.get("of", ["single"])
        kinds = [of] if isinstance(of, str) else of
        if not isinstance(kinds, list):
            _fail(where, f"{key}.of", f"expected a list of {', '.join(_ABLATED)}")
        for kind in kinds:
            if kind not in _ABLATED:
                _fail(where, f"{key}.of", f"expected some of {', '.join(_ABLATED)}; got {kind!r}")
            if kind not in exps:
                _fail(where, f"{key}.of", f"experiment {kind!r} is not defined in this study")
        if not isinstance(of, str):
            _check_distinct(where, f"{key}.of", kinds, "experiment")
        parsed.append({**abl, "change": change})
    return parsed


# --------------------------------------------------------------------------- external


def _parse_external(where: _Source, entries, datasets: dict) -> list[dict]:
    """The ``external`` list: methods whose masks the study scores, each with every key of
    :data:`EXTERNAL_KEYS` (``predictions``' folders expanded as dataset roots are).

    Raises
    ------
    StudyError
        Not a list of mappings; an unknown or missing key; a method name outside
        :data:`NAME_PATTERN` or repeated; ``train`` not a list of names; ``predictions`` not a
        mapping of the study's datasets to folders; a bad ``label``, ``pattern`` or ``glob``;
        a flag that is not true or false.
    """
    if entries is None:
        return []
    if not isinstance(entries, list) or not entries:
        _fail(where, "external", "expected a list of {method, predictions: {dataset: folder}}")
    parsed, methods = [], {}
    for i, entry in enumerate(entries):
        key = f"external[{i}]"
        if not isinstance(entry, dict):
            _fail(where, key, "expected a mapping with method and predictions")
        for k in entry:
            if k not in EXTERNAL_KEYS:
                _fail(where, f"{key}.{k}", f"unknown key (known: {', '.join(EXTERNAL_KEYS)})")
        for k in ("method", "predictions"):
            if k not in entry:
                _fail(where, f"{key}.{k}", "required")
        method = entry["method"]
        _check_name(where, f"{key}.method", method, "method name")
        if method in methods:
            _fail(where, f"{key}.method", f"method {method!r} is repeated (also {methods[method]})")
        methods[method] = key
        parsed.append(_parse_external_entry(where, key, {**EXTERNAL_KEYS, **entry}, datasets))
    return parsed


def _parse_external_entry(where: _Source, key: str, entry: dict, datasets: dict) -> dict:
    """One ``external`` entry's values checked (:func:`_parse_external`)."""
    train = entry["train"]
    train = [train] if isinstance(train, str) else train
    if not isinstance(train, list):
        _fail(where, f"{key}.train", "expected a list of dataset names")
    for j, name in enumerate(train):
        _check_name(where, f"{key}.train[{j}]", name, "dataset name")
    _check_distinct(where, f"{key}.train", train, "dataset")
    predictions = entry["predictions"]
    if not isinstance(predictions, dict) or not predictions:
        _fail(where, f"{key}.predictions", "expected a mapping of test dataset -> folder")
    for test, folder in predictions.items():
        if test not in datasets:
            _fail(
                where,
                f"{key}.predictions.{test}",
                f"unknown dataset {test!r} (declared: {', '.join(datasets)})",
            )
        if not isinstance(folder, str) or not folder:
            _fail(where, f"{key}.predictions.{test}", f"expected a folder, got {folder!r}")
    for flag in ("resample", "binarize", "allow_missing"):
        if not isinstance(entry[flag], bool):
            _fail(where, f"{key}.{flag}", f"expected true or false, got {entry[flag]!r}")
    problem = _setting_problem("label", entry["label"], datasets)
    if problem:
        _fail(where, f"{key}.label", problem)
    for k in ("pattern", "glob"):
        if not isinstance(entry[k], str):
            _fail(where, f"{key}.{k}", f"expected a string, got {entry[k]!r}")
    try:
        compile_pattern(entry["pattern"])
    except ValueError as exc:
        _fail(where, f"{key}.pattern", str(exc))
    if not entry["glob"] or Path(entry["glob"]).is_absolute():
        _fail(where, f"{key}.glob", "expected a glob relative to the prediction folder")
    folders = {test: _expand_env(folder) for test, folder in predictions.items()}
    return {**entry, "train": list(train), "predictions": folders}
