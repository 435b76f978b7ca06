"""What planar3d compares itself with: the paper's Table 2 and the MSSEG-2016 challenge's evaluation defaults."""

from __future__ import annotations

__all__ = ["ANIMA_ALPHA", "ANIMA_BETA", "ANIMA_GAMMA", "ANIMA_MIN_LESION_MM3", "PAPER_TABLE2", "paper_table2",
           "paper_table2_cell"]

#: The lesion detection rule of the MSSEG-2016 evaluation (Anima ``animaSegPerfAnalyzer``
#: ``-x 0.10 -y 0.70 -z 0.65 -v 3``): a lesion counts as detected when the other mask covers
#: more than ``alpha`` of it, with less than ``beta`` of the overlapping lesions outside it, the
#: check applied to the lesions making up ``gamma`` of the overlap; lesions under
#: ``min_lesion_mm3`` are ignored (see :func:`planar3d.evaluation.metrics.lesion_detection`).
ANIMA_ALPHA = 0.10
ANIMA_BETA = 0.70
ANIMA_GAMMA = 0.65
ANIMA_MIN_LESION_MM3 = 3.0


def paper_table2() -> dict[str, dict[str, tuple[float, float]]]:
    """Return the paper's Table 2 as ``{metric: {centre: (mean, std)}}``.

    Centres are ``"01"``, ``"07"``, ``"08"`` and ``"all"`` (overall), metrics ``"dice"``
    and ``"sensitivity"``. A fresh dictionary each call, for ``plot_metric_boxplots(paper=...)``.
    """
    return {
        "dice": {"01": (0.69, 0.11), "07": (0.50, 0.11), "08": (0.64, 0.09), "all": (0.61, 0.05)},
        "sensitivity": {
            "01": (0.61, 0.14), "07": (0.45, 0.13), "08": (0.72, 0.16), "all": (0.60, 0.10),
        },
    }


#: Kolarik et al. 2020, Table 2: mean ± std per centre and ``"overall"``
#: (the figures of :func:`paper_table2`, whose overall group is named "all").
PAPER_TABLE2 = {
    metric: {("overall" if centre == "all" else centre): value for centre, value in table.items()}
    for metric, table in paper_table2().items()
}


def paper_table2_cell(metric: str, group: str) -> str:
    """``"mean ± std"`` of the paper's Table 2 for a metric and a centre (or ``"overall"``); ``"—"``
    where the paper gives none."""
    table = PAPER_TABLE2.get(metric, {})
    return "%.2f ± %.2f" % table[group] if group in table else "—"
