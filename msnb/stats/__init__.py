"""Statistics and paper tables from a study's results table.

Input is the tidy results table (one row per model x test scan, see :data:`REQUIRED_COLUMNS`),
read from ``results.csv`` with :func:`load_results`. From it alone :func:`compute_all_tables`
rebuilds the paper's tables for whatever the study ran (the keys are listed in
:mod:`msnb.stats.tables`).

One module per job:

=================== ===========================================================================
module              job
=================== ===========================================================================
``results``         the results table: columns, validation, loading, default configuration
``inference``       the test primitives (Wilcoxon, Mann-Whitney, ANOVAs, CIs), one row per test
``tables``          the paper's tables and their tests, :func:`compute_all_tables`
``compare``         the paper's published cells beside the study's (paper | study | difference),
                    and the paper's cells as a results table (:func:`load_paper_results`)
``findings``        each claim of the paper: this study's effect, test, p and verdict
``render``          display cells, CSV / Markdown / ``metrics.json`` files, the heatmap
=================== ===========================================================================

Units. Each test is run twice where the data allow, and the ``unit`` column says which:
``pair`` (one value per train/test pair: the mean over that pair's test scans, as the paper
does) and ``scan`` (one value per test scan, paired on the same scans where the test is paired).
A test that cannot run (too few pairs or groups, no variance) gives a row whose ``status``
starts with ``"not enough data: "`` instead of a number.

Missing metric values (NaN: empty truth or empty prediction) are left out of means and tests;
every cell reports ``n_scans`` (values used) and ``n_missing`` (NaN values left out).

Seed replicates (models of one configuration trained with several seeds, told apart by the
results table's ``seed`` column): a cell is the mean over seeds of each seed's mean, with the
seed SD (``sd_seeds``), its 95 % t interval (``ci_low``, ``ci_high``) and ``n_seeds``
(:func:`compute_seed_cells`); paired tests pair cells on their seed means and report in
``stable_seeds`` of ``n_seeds`` how many seeds give the effect the same sign; the findings
give each effect a 95 % interval and say in how many seeds it is stable. With one seed every
number is what it was.
"""

from __future__ import annotations

from msnb.stats.compare import (
    COMPARISON_COLUMNS,
    NOT_RUN,
    PAPER_KEYS,
    PAPER_LABELS,
    compute_default_cells,
    compute_paper_comparison,
    dataset_key,
    load_paper_results,
)
from msnb.stats.findings import (
    CLAIMS,
    FINDING_COLUMNS,
    MIN_LEARNED_DICE,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    compute_findings,
)
from msnb.stats.inference import (
    EXACT_MAX_PAIRS,
    MIN_PAIRS,
    NOT_ENOUGH,
    TEST_COLUMNS,
    compute_mean_ci,
    compute_oneway_anova,
    compute_paired_test,
    compute_rm_anova,
    compute_seed_stability,
    compute_unpaired_test,
    count_same_sign,
    make_test_row,
    make_tests_frame,
    not_enough_row,
    wilcoxon_method,
)
from msnb.stats.render import (
    plot_train_test_heatmap,
    render_findings,
    render_paper_comparison,
    render_tables,
    render_train_test,
    summarize_tests,
    write_tables,
)
from msnb.stats.results import (
    ABLATION_TAG,
    CONFIG_COLUMNS,
    DEFAULTS,
    EXTERNAL_TAG,
    METRICS,
    OPTIONAL_COLUMNS,
    OPTIONAL_DEFAULTS,
    REQUIRED_COLUMNS,
    SCAN_COLUMNS,
    SEP,
    STRING_COLUMNS,
    has_experiment,
    has_experiment_prefix,
    is_default,
    load_results,
    replicate_id,
    resolve_output_path,
    select_single_default,
    serves_main_experiment,
    split_names,
    validate_results,
)
from msnb.stats.tables import (
    ABLATIONS,
    compute_ablation_table,
    compute_ablation_tests,
    compute_all_tables,
    compute_center_table,
    compute_center_tests,
    compute_combination_table,
    compute_combination_tests,
    compute_external_table,
    compute_external_tests,
    compute_label_table,
    compute_label_tests,
    compute_pair_means,
    compute_seed_cells,
    compute_seed_means,
    compute_seed_tables,
    compute_train_anova,
    compute_train_means,
    compute_train_test_table,
    find_setting_ablations,
    label_setting_ablation,
    select_tests,
)

__all__ = [
    "ABLATIONS",
    "ABLATION_TAG",
    "CLAIMS",
    "COMPARISON_COLUMNS",
    "CONFIG_COLUMNS",
    "DEFAULTS",
    "EXACT_MAX_PAIRS",
    "EXTERNAL_TAG",
    "FINDING_COLUMNS",
    "METRICS",
    "MIN_PAIRS",
    "NOT_ENOUGH",
    "MIN_LEARNED_DICE",
    "NOT_REPRODUCED",
    "NOT_RUN",
    "NOT_TESTABLE",
    "OPTIONAL_COLUMNS",
    "OPTIONAL_DEFAULTS",
    "PAPER_KEYS",
    "PAPER_LABELS",
    "REPRODUCED",
    "REQUIRED_COLUMNS",
    "SCAN_COLUMNS",
    "SEP",
    "STRING_COLUMNS",
    "TEST_COLUMNS",
    "compute_ablation_table",
    "compute_ablation_tests",
    "compute_all_tables",
    "compute_center_table",
    "compute_center_tests",
    "compute_combination_table",
    "compute_combination_tests",
    "compute_default_cells",
    "compute_external_table",
    "compute_external_tests",
    "compute_findings",
    "compute_label_table",
    "compute_label_tests",
    "compute_mean_ci",
    "compute_oneway_anova",
    "compute_pair_means",
    "compute_paired_test",
    "compute_paper_comparison",
    "compute_rm_anova",
    "compute_seed_cells",
    "compute_seed_means",
    "compute_seed_stability",
    "compute_seed_tables",
    "compute_train_anova",
    "compute_train_means",
    "compute_train_test_table",
    "compute_unpaired_test",
    "count_same_sign",
    "dataset_key",
    "find_setting_ablations",
    "has_experiment",
    "has_experiment_prefix",
    "is_default",
    "label_setting_ablation",
    "load_paper_results",
    "load_results",
    "make_test_row",
    "make_tests_frame",
    "not_enough_row",
    "plot_train_test_heatmap",
    "render_findings",
    "render_paper_comparison",
    "render_tables",
    "render_train_test",
    "replicate_id",
    "resolve_output_path",
    "select_single_default",
    "select_tests",
    "serves_main_experiment",
    "split_names",
    "summarize_tests",
    "validate_results",
    "wilcoxon_method",
    "write_tables",
]
