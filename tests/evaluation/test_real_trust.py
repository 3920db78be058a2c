"""The trust columns of real-stack tables, their warning and the trust-map figure."""

import json

import numpy as np
import pytest
import zarr
from matplotlib.figure import Figure
from test_real import _fake_inference, _write, phases_stack  # noqa: F401 (a fixture)

from grainflow.evaluation.real import TRUST, measure_stack, real_headline, truth_labels
from grainflow.figures.real import real_trust


def _with_trust(path, fractions, *, uncertain_above=0.1):
    """Give a fake inference store a disagreement map and the per-plane trust records."""
    root = zarr.open_group(str(path), mode="r+")
    shape = root["labels/phase/s0"].shape
    d = np.zeros(shape, np.float32)
    for z, f in enumerate(fractions):  # the first f of the pixels (row-major) uncertain
        flat = d[z].reshape(-1)
        flat[: round(f * flat.size)] = 0.3
    root.create_group("disagreement").create_array("s0", data=d)
    attrs = dict(root.attrs["grainflow"])
    attrs["trust"] = {"members": 3, "uncertain_above": uncertain_above}
    attrs["planes"] = [
        {"uncertain_fraction": float((d[z] > uncertain_above).mean()), "disagreement_mean": 0.3 * f}
        for z, f in enumerate(fractions)
    ]
    root.attrs["grainflow"] = attrs
    return path


@pytest.fixture
def trusted(tmp_path, phases_stack):  # noqa: F811
    store, masks = phases_stack
    ids = np.stack([truth_labels("phases", m)["particle_ids"] for m in masks])
    path = _fake_inference(
        tmp_path / "a.ome.zarr",
        stack="discs",
        task="phases",
        labels={"phase": masks, "particle_ids": ids},
    )
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"uncertain_above": 0.1, "uncertain_fraction_p99": 0.05}))
    return store, {"unet": _with_trust(path, [0.02, 0.30])}, {"unet": reference}


def test_trust_columns_flag_the_planes_beyond_the_synthetic_reference(tmp_path, trusted):
    store, inference, references = trusted
    table, _ = measure_stack(store, inference, references=references, flag_factor=2.0)
    assert list(table.columns[-len(TRUST) :]) == list(TRUST)
    rows = table.set_index("plane")
    assert rows.loc["0", "uncertain_fraction"] == pytest.approx(0.02, abs=1 / 1920)
    assert rows.loc["1", "uncertain_fraction"] == pytest.approx(0.30, abs=1 / 1920)
    assert list(rows["beyond_reference"]) == [0, 1, 1]  # plane 1 > 2 x 0.05; 'all': a count
    assert rows.loc["all", "uncertain_fraction"] == pytest.approx(
        rows.loc[["0", "1"], "uncertain_fraction"].mean()  # planes of equal size
    )
    assert (rows["uncertain_fraction_p99_synthetic"] == 0.05).all()
    head = real_headline(_write(table, tmp_path / "discs.tsv"))
    warning = head["models"][0]["warning"]
    assert warning.startswith("discs looks out of the training distribution: 1 of 2 plane(s)")
    assert "do not trust its numbers" in warning
    # without a reference: fractions, no flags; without the trust map: no trust columns
    table, _ = measure_stack(store, inference)
    assert table["beyond_reference"].eq(0).all()
    assert table["uncertain_fraction_p99_synthetic"].isna().all()
    assert real_headline(_write(table, tmp_path / "b.tsv"))["models"][0]["warning"] == ""


def test_the_trust_figure_shades_uncertain_pixels_and_warns(trusted):
    store, inference, references = trusted
    table, _ = measure_stack(store, inference, references=references)
    fig = real_trust(store, inference, table)
    assert isinstance(fig, Figure)
    maps = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(maps) == 2 * 2  # 2 planes x (shaded image, disagreement)
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 2 and "TV distance" in bars[0].get_ylabel()
    assert "WARNING" in fig._suptitle.get_text()
    assert "uncertain (orange) 30.0 %" in maps[2].get_title()
