"""benchmarks/gpu_check.sh on a machine without a GPU: skips, CPU smoke run, missing modules."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = ("tests", "throughput", "train", "infer")


def gpu_check(tmp_path: Path, *args: str, pythonpath: str = "", timeout: int = 120):
    """Run the shell script as a user would, with this Python, no GPU and no wheels."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CUDA_VISIBLE_DEVICES": "",  # no GPU, even on a machine with one
        "GPU_CHECK_WHEEL_DIR": str(tmp_path / "no-wheels"),
        "PYTHONPATH": pythonpath,
    }
    env.pop("OUT", None)
    cmd = ["bash", str(SCRIPT), *args, "--out", str(tmp_path / "out")]
    cmd += ["--workdir", str(tmp_path / "work")]
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def result(tmp_path: Path, part: str) -> dict:
    return json.loads((tmp_path / "out" / f"{part}.json").read_text())


def test_without_cuda_every_part_is_skipped_with_a_message(tmp_path):
    proc = gpu_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for part in PARTS:
        line = (
            f"gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False): skipping {part}"
        )
        assert line in proc.stdout.splitlines()
        record = result(tmp_path, part)
        assert record["cuda"] is False and record["skipped"] is True
        assert record["status"] == "skipped"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cuda"] is False
    assert [p["part"] for p in summary["parts"]] == list(PARTS)
    assert "Traceback" not in proc.stdout + proc.stderr


def test_cpu_smoke_runs_throughput_train_and_infer(tmp_path):
    start = time.perf_counter()
    proc = gpu_check(tmp_path, "throughput", "train", "infer", "--device", "cpu", "--smoke")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert time.perf_counter() - start < 120

    throughput = result(tmp_path, "throughput")
    assert throughput["status"] == "ok" and throughput["cuda"] is False
    assert set(throughput["configs"]) == {"default", "full"}
    for entry in throughput["configs"].values():
        assert entry["model_kwargs"]["depth"] == 2 and entry["size_px"] == 32
        for path in ("eager_fp32", "optimised"):
            assert entry[path]["images_per_s"] > 0
            assert entry[path]["gflop_per_image"] > 0
            assert entry[path]["fraction_of_bf16_peak"] is None  # no GPU peak on a CPU
        assert entry["optimised"]["num_workers"] == 1  # the DataLoader workers path ran
        assert entry["speedup"] > 0

    train = result(tmp_path, "train")
    assert train["status"] == "ok" and train["complete"] is True
    assert train["epochs_done"] == train["epochs_planned"] == 2
    assert train["epoch_s_median"] > 0
    f1 = train["held_out"]["boundary_f1"]
    assert f1 is not None and math.isfinite(f1) and 0 <= f1 <= 1
    assert (Path(train["run_dir"]) / "last.pt").is_file()  # the resume checkpoint

    infer = result(tmp_path, "infer")
    assert infer["status"] == "ok" and infer["side_px"] == 256
    assert infer["megapixels_per_s"] > 0 and infer["predict_megapixels_per_s"] > 0
    assert infer["gpu_utilisation"] is None  # nothing to sample on the CPU

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [p["status"] for p in summary["parts"]] == ["ok", "ok", "ok"]
    assert "| throughput | ok |" in proc.stdout  # the summary table
    assert (tmp_path / "out" / "gpu_check.log").read_text().strip()


def test_a_missing_module_gives_one_line_not_a_traceback(tmp_path):
    # a sitecustomize on PYTHONPATH hides zarr from every import, as on a machine without it
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n\n\n"
        "class HideZarr:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'zarr':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n\n\n"
        "sys.meta_path.insert(0, HideZarr())\n"
    )
    proc = gpu_check(tmp_path, "infer", "--device", "cpu", "--smoke", pythonpath=str(hide))
    assert proc.returncode == 2
    output = (proc.stdout + proc.stderr).strip()
    assert output.splitlines() == [
        "gpu_check: infer needs the Python module 'zarr', which is missing, and there is no "
        ".whl/ folder to install it from; put its wheel in .whl/"
    ]
    record = result(tmp_path, "infer")
    assert record["status"] == "missing_module" and record["missing_module"] == "zarr"


@pytest.fixture
def gpu_check_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check

        yield gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_gpu_sampler_reads_utilisation_and_survives_without_nvidia_smi(tmp_path, gpu_check_module):
    fake = tmp_path / "nvidia-smi"  # prints what the real one prints: timestamp, percent
    fake.write_text(
        "#!/bin/sh\ni=0\nwhile true; do\n"
        "  echo \"$(date '+%Y/%m/%d %H:%M:%S.%N' | cut -c1-23), $((i % 2 * 90))\"\n"
        "  i=$((i + 1)); sleep 0.05\ndone\n"
    )
    fake.chmod(0o755)
    with gpu_check_module.GpuSampler(exe=str(fake)) as sampler:
        time.sleep(1.0)
    stats = sampler.stats()
    assert sampler.error is None and stats["samples"] >= 4
    assert 0 < stats["mean_percent"] < 90 and 0 < stats["fraction_ge_80"] < 1
    assert sampler.stats(start=time.time() + 60)["samples"] == 0

    with gpu_check_module.GpuSampler(exe=str(tmp_path / "absent" / "nvidia-smi")) as missing:
        pass
    assert "could not be started" in missing.error
    assert missing.stats() == {"samples": 0, "mean_percent": None, "fraction_ge_80": None}


def test_gpu_peak_table(gpu_check_module):
    assert gpu_check_module.gpu_peak("NVIDIA H200")[0] == 989.0
    assert gpu_check_module.gpu_peak("NVIDIA H100 80GB HBM3")[0] == 989.0
    peak, note = gpu_check_module.gpu_peak("NVIDIA GeForce RTX 4090")
    assert peak is None and "no dense bf16 peak" in note
