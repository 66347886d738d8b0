"""The paper's published numbers: Badea & Popa (2024), Tables 2-7 and the numbers in its text.

The values live in one data file, ``msnb/data/badea_popa_2024.yaml`` (package data), each
with its table or section, in msnb's names (datasets of :data:`msnb.datasets.DATASETS`,
labels ``rater1`` / ``rater2`` / ``union``, normalization ``quantile`` / ``linear``,
architecture ``unetplusplus`` / ``unet``). :func:`load_paper_numbers` reads it;
:mod:`msnb.stats.compare` puts a study's tables beside it.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd
import yaml

__all__ = ["PAPER_FILE", "TABLES", "load_paper_numbers"]

#: The data file, in the package folder ``msnb/data``.
PAPER_FILE = "badea_popa_2024.yaml"
#: The tables of the data file, in the order of the paper.
TABLES = (
    "table2",
    "table3",
    "table4",
    "table5",
    "table6",
    "table7",
    "centers",
    "agreement",
    "label_means",
)


def load_paper_numbers() -> dict:
    """The paper's published numbers, read from :data:`PAPER_FILE`.

    Returns
    -------
    dict
        ``source`` (authors, title, date, code), ``datasets`` (the paper's dataset names ->
        msnb's), ``values`` (single numbers, e.g. ``values["miccai2016_winner"]["value"]`` is
        0.5914), ``p_values`` (DataFrame: ``name, section, table, test, printed, value``), and
        one DataFrame per name of :data:`TABLES`, with the table's ``section`` and
        ``caption`` in ``DataFrame.attrs``:

        ``table2``
            ``train_datasets, test_dataset, dice, iou`` (12 rows)
        ``table3``
            ``train_datasets, slices, heterogeneous, dice`` (4 rows)
        ``table4``
            ``train_datasets, test_dataset, dice, individual, iou`` (7 rows; ``individual``
            is the tuple of the components' Dice, in the order of ``train_datasets``)
        ``table5``
            ``train_datasets, label, test_dataset, dice, iou`` (9 rows)
        ``table6``, ``table7``
            ``train_datasets, test_dataset, dice_quantile, dice_linear`` and
            ``..., dice_unetplusplus, dice_unet`` (19 rows each)
        ``centers``
            ``train_datasets, test_dataset, center, seen_in_training, dice`` (4 rows)
        ``agreement``
            ``dataset, kind, dice`` (3 rows; ``kind`` as in :mod:`msnb.agreement`)
        ``label_means``
            ``train_datasets, label, dice`` (3 rows)

        A combination's datasets are joined by ``"+"`` in the paper's order.
    """
    text = resources.files("msnb").joinpath("data", PAPER_FILE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    out = {
        "source": raw["source"],
        "datasets": raw["datasets"],
        "values": raw["values"],
        "p_values": pd.DataFrame(raw["p_values"]),
    }
    for name in TABLES:
        spec = raw["tables"][name]
        rows = [[tuple(v) if isinstance(v, list) else v for v in row] for row in spec["rows"]]
        frame = pd.DataFrame(rows, columns=spec["columns"])
        frame.attrs.update(section=spec["section"], caption=" ".join(spec["caption"].split()))
        out[name] = frame
    return out
