"""The weight-generation evaluation folder (``segzoo weightgen-evaluate``): the one place that knows its files, writes it and reads it
back (as :class:`segzoo.data.preprocessed.Preprocessed` is for the preprocessed folder)::

    <table>.csv     one per table of :data:`TABLES` (what each holds: :mod:`segzoo.weightgen.evaluation.evaluate`)
    <figure>.png    the figures; figures.json lists them with their captions, in page order
    summary.json    the headline numbers and the criteria, each PASS or FAIL with what was measured
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from segzoo.io import output_dir, read_json, write_json

TABLES = ("networks", "prompting", "finetune", "finetune_curves", "unification", "criteria")
SUMMARY = "summary.json"
FIGURES = "figures.json"


def write_evaluation_folder(out: Path, tables: dict[str, pd.DataFrame], summary: dict,
                            draw: Callable[[Path], list[dict]]) -> None:
    """The folder ``out``, all or nothing: every table, the figures ``draw`` makes in it (it returns their list)
    and the summary."""
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise ValueError(f"tables {unknown} are not part of the G.pt evaluation folder ({', '.join(TABLES)})")
    with output_dir(out) as tmp:
        for name, table in tables.items():
            table.to_csv(tmp / f"{name}.csv", index=False, float_format="%.6g")
        write_json(tmp / FIGURES, draw(tmp))
        write_json(tmp / SUMMARY, summary)


class EvaluationFolder:
    """A finished G.pt evaluation folder, read."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def table_file(self, name: str) -> Path:
        if name not in TABLES:
            raise ValueError(f"{name!r} is not a table of the G.pt evaluation ({', '.join(TABLES)})")
        return self.folder / f"{name}.csv"

    def table(self, name: str) -> pd.DataFrame:
        """A table (an empty frame for a table with no rows, e.g. no in-sample draw)."""
        try:
            return pd.read_csv(self.table_file(name))
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    def summary(self) -> dict:
        return read_json(self.folder / SUMMARY)

    def figures(self) -> list[dict]:
        """``[{"file", "caption", ...}]`` in page order; ``file`` is relative to the folder."""
        return read_json(self.folder / FIGURES)
