"""The summary names a real stack that the trust map puts out of the training distribution."""

import pandas as pd
from test_report import _cv, _real_phases

from grainflow.report.summary import run_summary, summary_table, write_summary


def _with_trust(path, beyond):
    table = pd.read_csv(path, sep="\t", dtype={"plane": str})
    table["uncertain_fraction"] = 0.3
    table["uncertain_fraction_p99_synthetic"] = 0.05
    table["beyond_reference"] = [*beyond, sum(beyond)]  # the planes, then the all row
    table.to_csv(path, sep="\t", index=False, na_rep="NaN")
    return path


def test_the_summary_warns_about_a_stack_out_of_distribution(tmp_path):
    results = tmp_path / "results"
    real = results / "metrics" / "real"
    real.mkdir(parents=True)
    (results / "tables").mkdir()
    alloy = _with_trust(_real_phases(real / "alloy.tsv"), [0, 1, 1])
    table = summary_table(
        [_cv(tmp_path / "c.tsv", "phases", "unet", [0.95, 0.96], "iou")], real=[alloy]
    )
    warning = (
        "alloy looks out of the training distribution: 2 of 3 plane(s) have far more "
        "uncertain pixels than 99 % of fresh synthetic images"
    )
    assert warning in table["real_details"].iloc[0]
    write_summary(table, results / "tables" / "summary.tsv")
    line = run_summary(results)[2]
    assert line.startswith("real stacks: alloy IoU 0.250 (30 particles) [WARNING: " + warning)
    assert line.endswith("do not trust its numbers without checking]")
    # no plane beyond the reference: no warning
    _with_trust(alloy, [0, 0, 0])
    assert run_summary(results)[2] == "real stacks: alloy IoU 0.250 (30 particles)"
