"""profiles/slurm against a real SLURM: a single-node cluster on this machine, with a fake GPU.

tests/slurm/start-local-slurm.sh installs SLURM from the distribution's packages when it is
missing (as root, with apt-get), starts munge, MariaDB, slurmdbd, slurmctld and slurmd in a
private state directory, and tests/slurm/stop-local-slurm.sh stops exactly those daemons. The
workflow runs through ``snakemake --profile`` with an overlay of profiles/slurm that changes
only the site settings (account, partitions, GPU type) and the first poll delay. Skipped, with
the reason, only where SLURM cannot run: not root, no apt-get, no package mirror, or a real
SLURM already configured on the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_workdir, snakemake, tiny_config

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

HARNESS = ROOT / "tests" / "slurm"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
#: the local cluster: two partitions on one node, one fake GPU of a named type
CPU_PARTITION, GPU_PARTITION, GPU_TYPE = "cpu", "gpu", "a100"
#: a two-level slice of the tiny workflow (every synthesize job -> synthetic_statistics): each
#: level costs 12-35 s of job start-up and status polling, so the slice stays small
TARGETS = ["results/tables/synthetic_statistics.tsv"]
SKIP = 77  # the start script's "SLURM cannot run here"


def _state(path: Path) -> list[tuple[str, int, str]]:
    """The daemons recorded by the start script: (name, PID, start time)."""
    lines = (path / "pids").read_text().split("\n") if (path / "pids").exists() else []
    return [(n, int(p), s) for n, p, s in (line.split() for line in lines if line.strip())]


def _alive(name: str, pid: int, start: str) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return comm == name and stat.rsplit(")", 1)[1].split()[19] == start


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM for the whole session; its daemons are stopped afterwards."""
    if not sys.platform.startswith("linux"):
        pytest.skip(f"SLURM test cluster needs Linux, this is {sys.platform}")
    if os.geteuid() != 0:
        pytest.skip("SLURM test cluster needs root (apt-get, daemons); run `make test` as root")
    state = tmp_path_factory.mktemp("slurm")
    if len(str(state)) >= 80:  # sockets live in it, and socket paths are short
        state = Path(tempfile.mkdtemp(prefix="grainflow-slurm-", dir="/tmp"))
    env = {
        **os.environ,
        "STATE_DIR": str(state),
        "SLURM_CI_GPUS": "1",
        "SLURM_CI_GPU_TYPE": GPU_TYPE,
        "SLURM_CI_PARTITION": CPU_PARTITION,
        "SLURM_CI_GPU_PARTITION": GPU_PARTITION,
    }
    # through bash: a checkout may lose the scripts' executable bits
    stop = ["timeout", "-k", "10", "120", "bash", str(HARNESS / "stop-local-slurm.sh")]
    start = subprocess.run(
        ["timeout", "-k", "10", "600", "bash", str(HARNESS / "start-local-slurm.sh")],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if start.returncode == SKIP:
        pytest.skip(next(line for line in start.stderr.splitlines() if "SKIP:" in line))
    if start.returncode != 0:
        subprocess.run(stop, env=env, capture_output=True, stdin=subprocess.DEVNULL)
        pytest.fail(
            f"the test cluster did not start ({start.returncode=}):\n" + start.stderr[-6000:]
        )
    daemons = _state(state)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(state / "etc" / "slurm.conf"))
        yield state
    stopped = subprocess.run(
        stop, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert stopped.returncode == 0, stopped.stderr
    assert not [d for d in daemons if _alive(*d)], f"still running after the stop script: {daemons}"


def local_profile(path: Path, *, gpu_models: dict[str, str] | None = None) -> Path:
    """profiles/slurm with its site settings pointed at the local cluster.

    Only what a user edits for their cluster changes (account, partitions, GPU type), plus the
    first status poll (1 s instead of 40 s: the run takes a third of the time, nothing else
    changes). Everything else — executor, resources, retries, the GPU rules — is the profile's.
    """
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"].update(slurm_account="root", slurm_partition=CPU_PARTITION)
    for rule, model in {"train": "", "infer": "", **(gpu_models or {})}.items():
        profile["set-resources"][rule].update(slurm_partition=GPU_PARTITION, gpu_model=model)
    profile["slurm-init-seconds-before-status-checks"] = 1
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def sacct(run_id: str) -> list[dict[str, str]]:
    """SLURM's accounting records of the jobs of one Snakemake run (job name = run ID)."""
    fields = ["JobID", "JobName", "Comment", "Partition", "State", "ExitCode", "AllocTRES"]
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "-P",
            "-n",
            "-S",
            "now-1days",
            "--name",
            run_id,
            "-o",
            ",".join(f"{f}%300" for f in fields),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def rule_of(record: dict[str, str]) -> str:
    """The rule of a job, from the comment the plugin gives it: rule_<name>[_wildcards_<...>]."""
    return re.sub(r"_wildcards_.*$", "", record["Comment"]).removeprefix("rule_")


def run_id_of(log: str) -> str:
    match = re.search(r"SLURM run ID: (\S+)", log)
    assert match, log[-3000:]
    return match.group(1)


def job_stats(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table: jobs per rule in this run."""
    table = log[log.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in table:
        cells = line.split()
        if len(cells) != 2 or cells[0] == "total":
            break
        counts[cells[0]] = int(cells[1])
    return counts


def test_workflow_runs_through_sbatch(slurm_cluster, tmp_path):
    workdir = make_workdir(tmp_path / "run")
    profile = local_profile(tmp_path / "profile")
    result = snakemake(workdir, "--profile", str(profile), *TARGETS, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    for target in TARGETS:
        assert (workdir / target).stat().st_size > 0
    local = set(re.findall(r"^localrule (\w+):", log, re.MULTILINE))
    expected = {rule: n for rule, n in job_stats(log).items() if rule not in local}
    config = tiny_config()
    # the tasks whose specimens the statistics table reads
    specimens = sum(config["synthesize"][task]["specimens"] for task in ("grains", "phases"))
    assert expected.get("synthesize") == specimens
    # every job went through sbatch, and SLURM's accounting has it completed in the CPU partition
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) == sum(expected.values())
    records = sacct(run_id_of(log))
    assert sorted(r["JobID"] for r in records) == sorted(submitted)
    ran = {rule: sum(rule_of(r) == rule for r in records) for rule in expected}
    assert ran == expected
    for r in records:
        assert (r["State"], r["ExitCode"], r["Partition"]) == ("COMPLETED", "0:0", CPU_PARTITION), r
        assert "gres/gpu" not in r["AllocTRES"], r


PROBE_SNAKEFILE = r"""
# Stand-ins for the GPU rules (train, infer), a CPU rule and a failing rule. Their resources
# come from the profile, except train's GPU count, which the workflow's train rule takes from
# training.gpus_per_job; each writes the GPUs SLURM gave it.
rule train:
    output: "train.txt"
    resources: gpu=1
    shell: 'echo "${{CUDA_VISIBLE_DEVICES-unset}}" > {output}'

rule infer:
    output: "infer.txt"
    shell: 'echo "${{CUDA_VISIBLE_DEVICES-unset}}" > {output}'

rule measure:
    output: "measure.txt"
    shell: 'echo "${{CUDA_VISIBLE_DEVICES-unset}}" > {output}'

rule broken:
    output: "broken.txt"
    shell: "echo 'this job fails on purpose' >&2; exit 3"
"""


def planned_resources(log: str) -> dict[str, dict[str, str]]:
    """The resources of each rule's jobs, as a dry run prints them (one job per rule here)."""
    plan, rule = {}, None
    for line in log.splitlines():
        if match := re.match(r"rule (\w+):$", line.strip()):
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            items = line.strip().removeprefix("resources:").split(", ")
            plan[rule] = dict(item.strip().split("=", 1) for item in items)
    return plan


def test_profile_sends_gpu_rules_to_gpus_and_the_rest_to_cpus(tmp_path):
    """The profile as shipped, in a dry run: needs the plugin, not SLURM, so it runs everywhere."""
    (tmp_path / "Snakefile").write_text(PROBE_SNAKEFILE)
    cmd = [
        "timeout",
        "-k",
        "10",
        "120",
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(tmp_path / "Snakefile"),
        "-d",
        str(tmp_path),
        "--profile",
        str(PROFILE.parent),
        "--dry-run",
        "train.txt",
        "infer.txt",
        "measure.txt",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = planned_resources(result.stdout + result.stderr)
    site = yaml.safe_load(PROFILE.read_text())
    cpu, gpu = site["default-resources"], site["set-resources"]["train"]
    for rule in ("train", "infer"):
        assert plan[rule]["gpu"] == "1"
        assert plan[rule]["slurm_partition"] == gpu["slurm_partition"] != cpu["slurm_partition"]
    assert plan["measure"]["slurm_partition"] == cpu["slurm_partition"]
    assert "gpu" not in plan["measure"]
    for rule in plan:
        assert plan[rule]["slurm_account"] == str(cpu["slurm_account"])


@pytest.fixture(scope="module")
def probe_run(slurm_cluster, tmp_path_factory):
    """One run of the probe rules through the profile (keep-going: the failure stops nothing)."""
    path = tmp_path_factory.mktemp("probe")
    (path / "Snakefile").write_text(PROBE_SNAKEFILE)
    # infer asks for the GPU type by name, train for any GPU: both paths of the profile
    profile = local_profile(path / "profile", gpu_models={"infer": GPU_TYPE})
    cmd = [
        "timeout",
        "-k",
        "10",
        "300",
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(path / "Snakefile"),
        "-d",
        str(path),
        "--profile",
        str(profile),
        "--verbose",
        "train.txt",
        "infer.txt",
        "measure.txt",
        "broken.txt",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=path, stdin=subprocess.DEVNULL)
    log = result.stdout + result.stderr
    return path, result.returncode, log, sacct(run_id_of(log))


def test_gpu_rules_are_given_a_gpu(probe_run):
    path, _, log, records = probe_run
    for rule in ("train", "infer"):
        assert (path / f"{rule}.txt").read_text().strip() == "0", log[-4000:]
        (record,) = [r for r in records if rule_of(r) == rule]
        assert record["Partition"] == GPU_PARTITION and record["State"] == "COMPLETED"
        assert "gres/gpu=1" in record["AllocTRES"], record
    calls = {
        rule: line
        for line in log.splitlines()
        if "sbatch call:" in line
        for rule in ("train", "infer", "measure")
        if f"--comment rule_{rule} " in line
    }
    assert " --gpus=1" in calls["train"]
    assert f" --gpus={GPU_TYPE}:1" in calls["infer"]
    # a CPU rule sees no GPU and runs in the CPU partition
    assert (path / "measure.txt").read_text().strip() == "unset"
    (record,) = [r for r in records if rule_of(r) == "measure"]
    assert record["Partition"] == CPU_PARTITION and "gres/gpu" not in record["AllocTRES"]
    assert "--gpus" not in calls["measure"]


def test_a_failing_job_is_reported_as_failed(probe_run):
    path, returncode, log, records = probe_run
    assert returncode == 1, log[-4000:]
    assert "Error in rule broken" in log
    assert "SLURM status is: 'FAILED'" in log
    assert not (path / "broken.txt").exists()
    # tried 1 + retries times (the profile's setting), failed each time in SLURM's own records
    retries = yaml.safe_load(PROFILE.read_text()).get("retries", 0)
    broken = [r for r in records if rule_of(r) == "broken"]
    assert [r["State"] for r in broken] == ["FAILED"] * (1 + retries), broken
    # the failure stopped nothing else (keep-going)
    assert all(r["State"] == "COMPLETED" for r in records if rule_of(r) != "broken")
