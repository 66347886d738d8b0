"""The study grid: a YAML file of experiments, expanded into papermill jobs.

A study file names its datasets, the training settings and the experiments the way the
paper thinks about them (``single``, ``combinations``, ``labels``, ``ablations``).
:func:`expand_study` turns it into one training job per distinct training configuration and
one evaluation job per (model, test dataset); :func:`run_study` executes them with
papermill, sequentially, several at once or on a Dask distributed cluster, skipping jobs whose results exist
for the same parameters, and gathers every metrics file into ``results.csv``.

Example (see ``parameters/quick.yaml``)::

    name: quick
    datasets:
      isbi2015: {phantom: quick, seed: 0}
      msseg2016_train: {adapter: msseg2016_train, root: ${MSNB_DATA}/msseg2016}
      3dmrms: {adapter: 3dmrms, root: ${MSNB_DATA}/3dmrms, n4: true}
    training:
      architecture: unetplusplus
      size: 96
      epochs: 8
      normalization_reference: template     # one quantile template for every model
      template: {dataset: msseg2016_train, subject: "08_03"}
    experiments:
      single: [isbi2015, msseg2016_train]
      combinations: [{train: [isbi2015, msseg2016_train], test: [3dmrms]}]
      labels: {dataset: isbi2015, labels: [rater1, rater2, union]}
      ablations:
        - {name: linear, change: {normalization: linear}, of: [single, combinations]}

Modules, in the order a study runs:

- :mod:`~msnb.study.spec`: the study file's schema, :func:`load_study` (every check);
- :mod:`~msnb.study.grid`: :func:`expand_study` (experiments -> trainings, evaluations);
- :mod:`~msnb.study.jobs`: :class:`JobSpec` (notebook, parameters, digest, record),
  :func:`job_specs`, :func:`run_job`;
- :mod:`~msnb.study.notebooks`: :func:`execute_notebook`, the one papermill runner;
- :mod:`~msnb.study.runners`: jobs one after the other, several at once from threads, or on
  a Dask scheduler;
- :mod:`~msnb.study.results`: ``results.csv`` and the analyses run on it;
- :mod:`~msnb.study.reporting`: ``report.html``;
- :mod:`~msnb.study.run`: :func:`run_study`, end to end, with ``timings.json``;
- :mod:`~msnb.study.cli`: ``msnb study FILE``.
"""

from msnb.study.grid import EvalJob, TrainJob, expand_study
from msnb.study.jobs import (
    AGREEMENT_NOTEBOOK,
    EVAL_NOTEBOOK,
    STATS_NOTEBOOK,
    TRAIN_NOTEBOOK,
    JobSpec,
    eval_job_parameters,
    job_result,
    job_specs,
    run_job,
    template_parameters,
    train_job_parameters,
)
from msnb.study.notebooks import execute_notebook
from msnb.study.reporting import write_study_report
from msnb.study.results import analysis_specs, estimate, gather_results, rater_datasets
from msnb.study.run import run_study, write_timings
from msnb.study.spec import (
    EXPERIMENT_KINDS,
    TRAINING_DEFAULTS,
    TRAINING_KEYS,
    Study,
    StudyError,
    load_study,
)

__all__ = [
    "AGREEMENT_NOTEBOOK",
    "EVAL_NOTEBOOK",
    "EXPERIMENT_KINDS",
    "STATS_NOTEBOOK",
    "TRAINING_DEFAULTS",
    "TRAINING_KEYS",
    "TRAIN_NOTEBOOK",
    "EvalJob",
    "JobSpec",
    "Study",
    "StudyError",
    "TrainJob",
    "analysis_specs",
    "estimate",
    "eval_job_parameters",
    "execute_notebook",
    "expand_study",
    "gather_results",
    "job_result",
    "job_specs",
    "load_study",
    "rater_datasets",
    "run_job",
    "run_study",
    "template_parameters",
    "train_job_parameters",
    "write_study_report",
    "write_timings",
]
