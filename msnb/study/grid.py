"""The grid of a study: its experiments expanded into trainings and evaluations.

:func:`expand_study` turns the experiments the way the paper thinks about them
(``single``, ``combinations``, ``labels``, ``ablations``) into one training per distinct
training configuration and one evaluation per (model, test dataset). It expects a study
checked by :func:`msnb.study.spec.load_study`, and checks one thing itself: that no model id
names two configurations.

Model ids are unique by construction (:func:`msnb.recipe.model_id_for`): dataset names
(:data:`msnb.study.spec.NAME_PATTERN`) hold no ``+`` or ``__``, every shown setting is one of
its choices or an encoder name kept as is, and the other settings are hashed. The check
stands behind that construction: two experiments that give one id to different settings
are refused, naming both (:class:`msnb.study.spec.StudyError`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from msnb.datasets import CONSENSUS_FALLBACK
from msnb.recipe import canonical_architecture, model_id_for
from msnb.study.spec import LABELS, Study, as_list

__all__ = ["EvalJob", "TrainJob", "expand_study", "training_settings"]

# A plan: (train datasets, settings overrides, test datasets, experiment tag, seeds, key):
# ``key`` is the study-file key of the experiment that asks for it (for messages).
_Plan = tuple[list[str], dict, list[str], str, list[int], str]


@dataclass(frozen=True)
class TrainJob:
    """One training configuration of a study, and the experiments that use its model."""

    model_id: str
    train_datasets: tuple[str, ...]
    config: tuple  # sorted (key, value) pairs of the training settings
    experiments: tuple[str, ...]

    @property
    def settings(self) -> dict:
        return dict(self.config)


@dataclass(frozen=True)
class EvalJob:
    """One evaluation: a model on one test dataset, for the experiments listed."""

    model_id: str
    test_dataset: str
    experiments: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.model_id}__{self.test_dataset}"


def expand_study(study: Study) -> tuple[list[TrainJob], list[EvalJob]]:
    """The jobs of a study: each distinct training configuration once, then its tests.

    Parameters
    ----------
    study : Study
        A study from :func:`msnb.study.spec.load_study` (validated).

    Returns
    -------
    (train_jobs, eval_jobs)
        In a stable order; a model shared by several experiments appears once, with all
        the experiments that use it. Each replicate seed of an experiment is its own
        training (``__seed<k>`` in its id but for the study's first seed) and evaluations.

    Raises
    ------
    StudyError
        Two experiments give one model id to different configurations.
    """
    base = study.training
    trains: dict[str, dict] = {}
    evals: dict[tuple[str, str], set] = {}
    for train, overrides, tests, tag, seeds, key in _plans(study):
        for seed in seeds:
            settings = training_settings(train, {**base, **overrides, "seed": seed})
            mid = model_id_for(train, settings, base)
            entry = trains.setdefault(
                mid, {"train": tuple(train), "settings": settings, "tags": [], "key": key}
            )
            _check_same_model(study, mid, entry, tuple(train), settings, key)
            if tag not in entry["tags"]:
                entry["tags"].append(tag)
            for t in tests:
                evals.setdefault((mid, t), set()).add(tag)
    train_jobs = [
        TrainJob(mid, e["train"], tuple(sorted(e["settings"].items())), tuple(e["tags"]))
        for mid, e in trains.items()
    ]
    eval_jobs = [EvalJob(mid, t, tuple(sorted(tags))) for (mid, t), tags in evals.items()]
    return train_jobs, eval_jobs


def _check_same_model(
    study: Study, mid: str, entry: dict, train: tuple, settings: dict, key: str
) -> None:
    """Refuse a model id that ``entry`` (the first configuration with it) already holds
    for other training datasets or settings; the message names both experiments."""
    if entry["train"] == train and entry["settings"] == settings:
        return
    first = entry["key"]
    differ = [k for k in sorted(settings) if settings[k] != entry["settings"].get(k)]
    what = ", ".join(differ) if entry["train"] == train else "training datasets"
    raise study.error(
        key,
        f"its model id {mid!r} is also that of {first} (line {study.line(first)}), whose "
        f"{what} differ: one id must name one model",
    )


def training_settings(train_datasets: list[str], settings: dict) -> dict:
    """The settings a model of ``train_datasets`` is trained with.

    The architecture's canonical name (:func:`msnb.recipe.canonical_architecture`); a
    dataset without a consensus trained alone uses its rater of
    :data:`msnb.datasets.CONSENSUS_FALLBACK` for ``consensus``, and naming that rater in the
    model id lets the ``single`` and ``labels`` experiments train that model once.
    """
    settings = {**settings, "architecture": canonical_architecture(settings["architecture"])}
    fallback = CONSENSUS_FALLBACK.get(train_datasets[0]) if len(train_datasets) == 1 else None
    if settings["label"] == "consensus" and fallback:
        settings["label"] = fallback
    return settings


def _plans(study: Study) -> list[_Plan]:
    """Every (train, overrides, tests, tag, seeds) of the experiments, ablations last.

    An experiment's seeds are its own (``seeds`` in its entry) or the study's; an ablation's
    own seeds replace those of the experiments it repeats.
    """
    exps = study.experiments
    plans: list[_Plan] = []
    for kind, planner in _PLANNERS.items():
        if kind in exps:
            plans += planner(study, {}, kind)
    for i, abl in enumerate(exps.get("ablations") or []):
        tag, key = f"ablation:{abl['name']}", f"experiments.ablations[{i}]"
        for kind in as_list(abl.get("of", ["single"])):
            for plan in _PLANNERS[kind](study, abl["change"], tag):
                train, overrides, tests, _, seeds, _ = plan
                plans.append((train, overrides, tests, tag, abl.get("seeds", seeds), key))
    return plans


def _single(study: Study, overrides: dict, tag: str) -> list[_Plan]:
    """One model per dataset, tested on every other dataset of the experiment."""
    single = study.experiments["single"]
    names = as_list(single)
    return [
        (
            [d],
            overrides,
            [t for t in names if t != d],
            tag,
            study.seeds,
            "experiments.single" if isinstance(single, str) else f"experiments.single[{i}]",
        )
        for i, d in enumerate(names)
    ]


def _combinations(study: Study, overrides: dict, tag: str) -> list[_Plan]:
    """One model per combination of training datasets, tested on the listed datasets."""
    return [
        (
            as_list(item["train"]),
            overrides,
            as_list(item["test"]),
            tag,
            item.get("seeds", study.seeds),
            f"experiments.combinations[{i}]",
        )
        for i, item in enumerate(study.experiments["combinations"])
    ]


def _labels(study: Study, overrides: dict, tag: str) -> list[_Plan]:
    """One model per label of one dataset (default: tested on every other dataset)."""
    spec = study.experiments["labels"]
    (dataset,) = as_list(spec["dataset"])
    labels = spec.get("labels", list(LABELS))
    test = as_list(spec.get("test") or [d for d in study.datasets if d != dataset])
    seeds = spec.get("seeds", study.seeds)
    listed = "labels" in spec
    return [
        (
            [dataset],
            {**overrides, "label": label},
            test,
            tag,
            seeds,
            f"experiments.labels.labels[{i}]" if listed else "experiments.labels",
        )
        for i, label in enumerate(labels)
    ]


_PLANNERS: dict[str, Callable[[Study, dict, str], list[_Plan]]] = {
    "single": _single,
    "combinations": _combinations,
    "labels": _labels,
}
