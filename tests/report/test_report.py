"""The report: its summary table (grainflow.report.summary), and the built report in a real browser.

The browser test renders the report of the shared tiny run (conftest ``tiny_run``) in headless
Chromium. A Snakemake report is one HTML file holding a React app that draws everything with
JavaScript, so the test checks the *rendered* DOM: a small script, appended to a copy of the
report, walks the app (every category and subcategory, every result's caption, every image and
HTML page) and leaves what it saw as JSON in the DOM, which ``chromium --dump-dom`` prints.
Chromium (Debian's ``chromium`` package) is installed with apt-get when missing; the test is
skipped, with the reason, only where that cannot work (not root, no apt-get, no mirror).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from grainflow.report.summary import (
    SUMMARY_COLUMNS,
    main,
    read_summary,
    run_summary,
    summary_headline,
    summary_html,
    summary_table,
    write_summary,
)

# ------------------------------------------------------------------ summary table

CV_GRAINS = ["task", "model", "fold", "n_images", "boundary_f1", "pixel_iou"]


def _cv(path, task, model, folds, metric):
    """A cv.tsv like rule aggregate_metrics writes: fold rows, mean, std (ddof 1), pooled."""
    s = pd.Series(folds)
    rows = [[task, model, str(k), 4, v, 0.5] for k, v in enumerate(folds)]
    rows += [
        [task, model, "mean", 12, s.mean(), 0.5],
        [task, model, "std", 12, s.std(), 0.0],
        [task, model, "pooled", 12, s.mean(), 0.5],
    ]
    cols = ["task", "model", "fold", "n_images", metric, "other"]
    pd.DataFrame(rows, columns=cols).to_csv(path, sep="\t", index=False)
    return path


def _real_grains(path, *, g=9.25, model="unet"):
    cols = [
        "stack",
        "task",
        "model",
        "plane",
        "file",
        "group",
        "pixel_size_um",
        "length_unit",
        "n_grains",
        "astm_g_planimetric",
        "astm_g_intercept",
        "mean_intercept",
        "ecd_median",
    ]
    rows = [
        ["steel", "grains", model, "0", "a.tif", "NaN", 0.2, "um", 141, g, 9.36, 12.5, 9.65],
        ["steel", "grains", model, "all", "NaN", "NaN", 0.2, "um", 141, g, 9.36, 12.5, 9.65],
    ]
    pd.DataFrame(rows, columns=cols).to_csv(path, sep="\t", index=False, na_rep="NaN")
    return path


def _real_phases(path):
    cols = [
        "stack",
        "task",
        "model",
        "plane",
        "file",
        "group",
        "pixel_size_um",
        "length_unit",
        "area_fraction",
        "n_particles",
        "ecd_median",
        "iou",
        "area_fraction_true",
    ]
    rows = [
        ["alloy", "phases", "unet", str(k), f"{k}.png", "g", "NaN", "px", 0.1, 10, 5.0, 0.2, 0.5]
        for k in range(3)
    ]
    rows.append(
        ["alloy", "phases", "unet", "all", "NaN", "NaN", "NaN", "px", 0.1, 30, 5.0, 0.25, 0.5]
    )
    pd.DataFrame(rows, columns=cols).to_csv(path, sep="\t", index=False, na_rep="NaN")
    return path


def test_summary_picks_the_best_network_and_puts_the_baseline_beside_it(tmp_path):
    cv = [
        _cv(tmp_path / "a.tsv", "grains", "unet", [0.90, 0.80, 0.85], "boundary_f1"),
        _cv(tmp_path / "b.tsv", "grains", "wide", [0.95, 0.93, 0.97], "boundary_f1"),
        _cv(tmp_path / "c.tsv", "grains", "classical", [0.70, 0.60, 0.65], "boundary_f1"),
        _cv(tmp_path / "d.tsv", "phases", "unet", [0.5, 0.7], "iou"),
    ]
    table = summary_table(cv, real=[_real_grains(tmp_path / "r.tsv", model="wide")])
    assert list(table.columns) == SUMMARY_COLUMNS
    grains = table.set_index("task").loc["grains"]
    assert grains["model"] == "wide" and grains["metric"] == "boundary F1"
    assert grains["mean"] == pytest.approx(0.95) and grains["std"] == pytest.approx(0.02)
    assert grains["n_folds"] == 3
    assert grains["classical_mean"] == pytest.approx(0.65)
    assert grains["classical_std"] == pytest.approx(0.05)
    assert grains["stack"] == "steel" and grains["real_unit"] == "G"
    assert grains["real_value"] == pytest.approx(9.25)
    phases = table.set_index("task").loc["phases"]
    assert phases["n_folds"] == 2 and math.isnan(phases["classical_mean"])
    assert phases["stack"] == ""  # no real stack of that task
    head = summary_headline(table)
    assert [h["task"] for h in head] == ["grains", "phases"]
    assert head[0]["score"] == "0.950 ± 0.020" and head[0]["classical"] == "0.650 ± 0.050"
    assert head[0]["real"] == ["steel: ASTM E112 grain size number G (planimetric) = 9.25"]
    assert head[1]["classical"] == "n/a" and head[1]["real"] == []


def test_summary_quotes_the_real_score_where_there_is_ground_truth(tmp_path):
    cv = [
        _cv(tmp_path / "a.tsv", "phases", "unet", [0.9, 0.8], "iou"),
        _cv(tmp_path / "b.tsv", "phases", "classical", [0.7, 0.6], "iou"),
    ]
    table = summary_table(cv, real=[_real_phases(tmp_path / "alloy.tsv")])
    row = table.iloc[0]
    assert row["real_quantity"].startswith("particle-phase IoU")
    assert row["real_value"] == pytest.approx(0.25) and row["real_unit"] == ""
    assert row["real_details"].startswith("3 plane(s), unet: area fraction 0.100 (truth 0.500)")
    # TSV round trip, and the HTML page holds one row per task
    write_summary(table, tmp_path / "summary.tsv")
    back = read_summary(tmp_path / "summary.tsv")
    assert back["real_value"].iloc[0] == pytest.approx(0.25) and back["real_unit"].iloc[0] == ""
    page = summary_html(back)
    assert page.count("<tr><td>") == 1 and "0.850 ± 0.071" in page and "alloy" in page


def test_summary_adds_diffraction_accuracy_per_arch(tmp_path):
    summary = tmp_path / "summary.tsv"
    pd.DataFrame(
        {
            "fold": ["0", "1", "2", "all"],
            "patterns": [10, 10, 10, 30],
            "accuracy": [0.6, 0.8, 0.7, 0.7],
            "ece": [0.1] * 4,
        }
    ).to_csv(summary, sep="\t", index=False)
    table = summary_table([], diffraction={"diffraction_cnn": summary})
    row = table.iloc[0]
    assert (row["task"], row["model"], row["n_folds"]) == ("diffraction", "diffraction_cnn", 3)
    assert row["mean"] == pytest.approx(0.7) and row["std"] == pytest.approx(0.1)
    assert row["metric"] == "crystal-system accuracy"


def test_summary_headline_is_a_network_that_reads_every_pattern_kind(tmp_path):
    def write(name, patterns, accuracy):
        path = tmp_path / f"{name}.tsv"
        pd.DataFrame(
            {
                "fold": ["0", "1", "all"],
                "patterns": [patterns, patterns, 2 * patterns],
                "accuracy": [accuracy, accuracy, accuracy],
            }
        ).to_csv(path, sep="\t", index=False)
        return path

    # ring_profile reads ring patterns only: half the held-out patterns, a higher accuracy
    table = summary_table(
        [],
        diffraction={
            "diffraction_cnn": write("cnn", 96, 0.67),
            "ring_profile": write("ring", 48, 0.69),
        },
    )
    assert table.iloc[0]["model"] == "diffraction_cnn"


def test_summary_rejects_tables_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.tsv"
    pd.DataFrame({"task": ["grains"], "model": ["unet"], "fold": ["0"]}).to_csv(
        bad, sep="\t", index=False
    )
    with pytest.raises(ValueError, match="missing column"):
        summary_table([bad])
    pd.DataFrame({"task": ["welds"], "model": ["unet"]}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match="task must be one of"):
        summary_table([bad])


def test_run_summary_prints_the_key_numbers_and_names_what_is_missing(tmp_path, capsys):
    results = tmp_path / "results"
    real = results / "metrics" / "real"
    real.mkdir(parents=True)
    (results / "tables").mkdir()
    cv = [
        _cv(tmp_path / "a.tsv", "grains", "unet", [0.99, 0.98, 0.985], "boundary_f1"),
        _cv(tmp_path / "b.tsv", "grains", "classical", [0.75, 0.70, 0.80], "boundary_f1"),
        _cv(tmp_path / "c.tsv", "phases", "unet", [0.95, 0.96], "iou"),
    ]
    diffraction = tmp_path / "diffraction.tsv"
    pd.DataFrame({"fold": ["0", "1", "all"], "accuracy": [0.6, 0.8, 0.7]}).to_csv(
        diffraction, sep="\t", index=False
    )
    table = summary_table(
        cv,
        real=[_real_grains(real / "steel.tsv"), _real_phases(real / "alloy.tsv")],
        diffraction={"resnet18": diffraction},
    )
    write_summary(table, results / "tables" / "summary.tsv")
    (real / "steel.sizes.tsv").write_text("not a stack table\n")  # beside it, never read

    lines = run_summary(results)
    assert lines == [
        f"report: {results / 'report.html'} (missing: run make report)",
        "held-out synthetic: grains boundary F1 0.985 ± 0.005 (unet, 3 folds; classical "
        "0.750); phases particle-phase IoU 0.955 ± 0.007 (unet, 2 folds)",
        "real stacks: steel G 9.25 planimetric / 9.36 intercept (141 grains); "
        "alloy IoU 0.250 (30 particles)",
        "diffraction: crystal-system accuracy 0.700 ± 0.141 (resnet18, 2 folds)",
    ]
    # a missing table is named, never an error; the CLI exits 0 and prints the same lines
    (results / "report.html").write_text("<html></html>")
    (real / "alloy.tsv").unlink()
    assert main([str(results)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"report: {results / 'report.html'}"
    assert printed[2] == "real stacks: steel G 9.25 planimetric / 9.36 intercept (141 grains)"
    assert printed[4] == f"missing: {real / 'alloy.tsv'} (rule measure)"
    # no summary table at all: the real tables there are, and what is missing
    (results / "tables" / "summary.tsv").unlink()
    lines = run_summary(results)
    assert lines[1:] == [
        "held-out synthetic: no result",
        "real stacks: steel G 9.25 planimetric / 9.36 intercept (141 grains)",
        "diffraction: no result",
        f"missing: {results / 'tables' / 'summary.tsv'} (rule summary_table)",
    ]
    (results / "tables" / "summary.tsv").write_text("task\tmetric\ngrains\n")  # broken
    assert run_summary(results)[-1].startswith(f"missing: {results}/tables/summary.tsv unreadable")


# ------------------------------------------------------------------ the report in a browser

#: walks the report's React app and records what it rendered (JSON in <pre id="grainflow-check">)
CHECK_JS = r"""
(function () {
  "use strict";
  const out = {errors: [], menu: "", subcategories: {}, captions: {}, images: {}, html: {},
               done: false};
  window.addEventListener("error", (ev) => out.errors.push(String(ev.message)));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const text = () => document.querySelector("#app").innerText;
  function dump() {
    let pre = document.getElementById("grainflow-check");
    if (!pre) {
      pre = document.createElement("pre");
      pre.id = "grainflow-check";
      pre.hidden = true;
      document.body.appendChild(pre);
    }
    pre.textContent = JSON.stringify(out);
  }
  async function run() {
    await sleep(200);
    out.menu = text();  // the start page: menu and workflow description
    for (const [cat, subcats] of Object.entries(categories)) {
      for (const sub of Object.keys(subcats)) {
        // through the menu, as a reader clicks: the result list is built when it is mounted
        app.setView({navbarMode: "menu"});
        await sleep(30);
        app.setView({navbarMode: "subcategory", category: cat, subcategory: sub});
        await sleep(50);
        const shown = text();  // the result list: each result's path (no labels are used)
        out.subcategories[cat + " / " + sub] = {
          results: subcats[sub], missing: subcats[sub].filter((p) => !shown.includes(p))};
      }
    }
    for (const [path, r] of Object.entries(results)) {
      app.showResultInfo(path);
      await sleep(30);
      out.captions[path] = text();
      if (r.mime_type.startsWith("image/")) {
        app.setView({content: "img", contentPath: r.data_uri, resultPath: path});
        await sleep(30);
        const img = [...document.querySelectorAll("#app img")].find((i) => i.src === r.data_uri);
        if (img) {
          for (let k = 0; k < 300 && !img.complete; k++) await sleep(10);
        }
        out.images[path] = img ? [img.naturalWidth, img.naturalHeight] : null;
      } else if (r.mime_type === "text/html") {
        app.setView({content: "html", contentPath: r.data_uri, resultPath: path});
        await sleep(30);
        const frame = [...document.querySelectorAll("#app iframe")]
          .find((f) => f.src === r.data_uri);
        const doc = new DOMParser().parseFromString(await (await fetch(r.data_uri)).text(),
                                                    "text/html");
        out.html[path] = {iframe: Boolean(frame), rows: doc.querySelectorAll("tbody tr").length,
                          text: doc.body.innerText};
      }
      dump();
    }
    out.done = true;
  }
  window.addEventListener("load", () => {
    run().catch((e) => out.errors.push(String((e && e.stack) || e))).finally(dump);
  });
})();
"""


def _find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """Path of a headless-capable Chromium, installed with apt-get when missing."""
    path = _find_chromium()
    if path:
        return path
    if not sys.platform.startswith("linux"):
        pytest.skip(
            "no chromium on PATH, and installing it needs Debian/Ubuntu (apt-get), "
            f"this is {sys.platform}"
        )
    if os.geteuid() != 0:
        pytest.skip("no chromium on PATH, and installing it needs root (apt-get install chromium)")
    if not shutil.which("apt-get"):
        pytest.skip("no chromium on PATH and no apt-get to install it")
    log = tmp_path_factory.mktemp("apt") / "apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    opts = ["-q", "-y", "-o", "DPkg::Lock::Timeout=300"]
    with open(log, "w") as f:
        for args in (
            ["update"],
            ["install", "--no-install-recommends", "chromium", "fonts-liberation"],
        ):
            done = subprocess.run(
                ["timeout", "900", "apt-get", *opts, *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
            if done.returncode != 0:
                tail = " ".join(log.read_text().splitlines()[-2:])
                pytest.skip(
                    f"apt-get {args[0]} failed ({done.returncode}; no package mirror?): {tail}"
                )
    path = _find_chromium()
    if not path:
        pytest.fail("apt-get installed chromium, but no chromium is on PATH")
    return path


def _render(chromium, report, tmp_path, *, corrupt: str | None = None) -> dict:
    """Load ``report`` with the checking script in headless Chromium; what it recorded.

    ``corrupt``: the path of an image result whose embedded PNG is damaged first (to show
    that a broken image is caught).
    """
    page = report.read_text(encoding="utf-8")
    if corrupt:
        start = page.index('<script id="results">')
        key = page.index(json.dumps(corrupt) + ": {", start)
        data = page.index(";base64,", page.index('"data_uri"', key)) + len(";base64,")
        page = page[:data] + "AAAA" + page[data:]  # no longer a PNG signature
    end = page.rindex("</body>")
    checked = tmp_path / "report-checked.html"
    checked.write_text(page[:end] + f"<script>{CHECK_JS}</script>\n" + page[end:], encoding="utf-8")
    cmd = [
        "timeout",
        "-k",
        "10",
        "240",
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=120000",
        "--dump-dom",
        checked.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r'<pre id="grainflow-check"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found, (
        "the checking script left no result: the report's app did not load\n" + done.stderr[-3000:]
    )
    return json.loads(html.unescape(found.group(1)))


#: the report's sections (menu entries, optionally numbered "1. ..." to set their order)
SECTIONS = [
    "Summary",
    "Synthetic data",
    "CNN anatomy",
    "Augmentation and splits",
    "Training",
    "Cross-validated results",
    "Real stacks",
    "Diffraction",
    "Provenance",
]


def _section(line: str) -> str:
    """A menu entry without its number: "0. Summary" -> "Summary"."""
    return re.sub(r"^\d+\.\s+", "", line)


@pytest.mark.workflow
def test_report_renders_in_a_browser_with_every_section_and_image(tiny_run, chromium, tmp_path):
    tiny_run.check()
    seen = _render(chromium, tiny_run.workdir / "results/report.html", tmp_path)
    assert seen["done"] and not seen["errors"], seen["errors"]
    # the start page: the methods text and every section in the menu, the summary first
    assert "Methods" in seen["menu"] and "base seed" in seen["menu"]
    menu = seen["menu"].splitlines()
    results_menu = [_section(line) for line in menu[menu.index("RESULTS") + 1 :]]
    for section in SECTIONS:
        assert section in results_menu, (section, results_menu)
    assert results_menu[0] == "Summary", results_menu[:3]
    # every result is listed in its (sub)category and has a rendered caption
    listed = {p for sub in seen["subcategories"].values() for p in sub["results"]}
    assert listed == set(seen["captions"])
    missing = {k: sub["missing"] for k, sub in seen["subcategories"].items() if sub["missing"]}
    assert not missing, missing
    for path, info in seen["captions"].items():
        assert "DESCRIPTION" in info, path
        assert "{{" not in info and "{%" not in info, f"unrendered Jinja in the caption of {path}"
    # every image loads: a broken one has no natural size
    images = seen["images"]
    broken = [p for p, size in images.items() if not size or min(size) == 0]
    assert not broken, broken
    for name in (
        "synthetic_examples",
        "anatomy_kernels",
        "folds_grains",
        "training_grains_unet",
        "overlays_phases_unet",
        "real_overlays_nist_steel",
        "real_sizes_nasa_superalloy",
        "synthetic_beside_real_nist_steel",
        "diffraction_forms",
        "diffraction_confusion_diffraction_cnn",
        "diffraction_transfer",
        "diffraction_scan_diffraction_cnn",
    ):
        assert f"results/figures/{name}.png" in images, name
    figures = tiny_run.workdir / "results/figures"
    on_disk = {f"results/figures/{p.name}" for p in figures.glob("*.png")}
    assert on_disk <= set(images), sorted(on_disk - set(images))
    # the summary and the provenance pages
    summary = seen["html"]["results/tables/summary.html"]
    assert summary["iframe"] and summary["rows"] == 4  # grains, phases, nanoparticles, diffraction
    for text in (
        "boundary F1",
        "particle-phase IoU",
        "nist_steel",
        "nasa_superalloy",
        "G = ",
        "classical",
        "crystal-system accuracy",
    ):
        assert text in summary["text"], text
    provenance = seen["html"]["results/provenance/provenance.html"]
    for text in (
        "Run times per rule",
        "Package versions",
        "torch",
        "Hardware",
        "git commit",
        "Seeds",
        "Config",
        "train",
    ):
        assert text in provenance["text"], text


@pytest.mark.workflow
def test_browser_check_catches_a_broken_image(tiny_run, chromium, tmp_path):
    tiny_run.check()
    victim = "results/figures/synthetic_examples.png"
    seen = _render(chromium, tiny_run.workdir / "results/report.html", tmp_path, corrupt=victim)
    assert seen["done"]
    assert seen["images"][victim] == [0, 0]
    assert all(min(size) > 0 for p, size in seen["images"].items() if p != victim)
