"""Staged writes: a store takes its name only when complete, and two writers do not corrupt it."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from grainflow.io.ome_zarr import check_ome_zarr
from grainflow.io.staging import FOREIGN_STALE_S, owner_tag, remove_stale, staged_dir

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np, zarr
    from grainflow.io.ome_zarr import check_ome_zarr, ngff_writer
    from grainflow.io.staging import staged_dir

    out, value, pause = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    fmt, write_multiscales, _ = ngff_writer()
    with staged_dir(out, check=check_ome_zarr) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        s0 = root.create_array("s0", shape=(1, 8, 8), dtype="f4", chunks=(1, 4, 4))
        s0[...] = value
        time.sleep(pause)  # a slow writer: the other one starts and ends meanwhile
        s1 = root.create_array("s1", shape=(1, 4, 4), dtype="f4", chunks=(1, 4, 4))
        s1[...] = value
        axes = [{"name": "z", "type": "space"}, {"name": "y", "type": "space"},
                {"name": "x", "type": "space"}]
        write_multiscales(
            root,
            datasets=[{"path": f"s{k}", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 2.0**k, 2.0**k]}]} for k in range(2)],
            fmt=fmt, axes=axes, name="test",
        )
    print("done", value)
    """
)


def _write(out, value, pause):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), str(value), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_writers_leave_a_complete_store(tmp_path):
    out = tmp_path / "x.ome.zarr"
    slow = _write(out, 1.0, 3.0)
    time.sleep(1.0)  # the slow writer is inside its staged folder now
    fast = _write(out, 2.0, 0.0)
    assert fast.wait(60) == 0, fast.stderr.read()
    assert slow.wait(60) == 0, slow.stderr.read()
    check_ome_zarr(out)  # every level present: neither writer deleted the other's work
    root = zarr.open_group(str(out), mode="r")
    values = {float(np.unique(root["s0"][:])[0]), float(np.unique(root["s1"][:])[0])}
    assert values == {1.0}  # one writer's store whole: the slow one finished last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ome.zarr"]


def test_an_incomplete_store_never_takes_the_name(tmp_path):
    out = tmp_path / "y.ome.zarr"
    out.mkdir()
    (out / "old").write_text("the previous result")
    with pytest.raises(ValueError, match="no OME multiscales"):
        with staged_dir(out, check=check_ome_zarr) as tmp:
            zarr.open_group(str(tmp), mode="w", zarr_format=3).create_array(
                "s0", shape=(2, 2), dtype="u1"
            )
    assert (out / "old").read_text() == "the previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.ome.zarr"]


def test_stale_folders_go_only_when_their_writer_is(tmp_path):
    out = tmp_path / "s.ome.zarr"
    host = owner_tag().rsplit("-", 1)[0]
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    folders = {
        "legacy": tmp_path / ".s.ome.zarr.k1ll3d.tmp",  # written before owners were named
        "alive": tmp_path / f".s.ome.zarr.{host}-{os.getpid()}.abc.tmp",
        "dead": tmp_path / f".s.ome.zarr.{host}-{dead_pid}.def.tmp",
        "dead_old": tmp_path / f".s.ome.zarr.{host}-{dead_pid}.ghi.old",
        "foreign_new": tmp_path / ".s.ome.zarr.othernode-12.jkl.tmp",
        "foreign_old": tmp_path / ".s.ome.zarr.othernode-13.mno.tmp",
        "other_output": tmp_path / f".t.ome.zarr.{host}-{dead_pid}.pqr.tmp",
    }
    for path in folders.values():
        (path / "s0").mkdir(parents=True)
    past = time.time() - FOREIGN_STALE_S - 60
    os.utime(folders["foreign_old"], (past, past))
    remove_stale(out)
    kept = {name for name, path in folders.items() if path.exists()}
    assert kept == {"alive", "foreign_new", "other_output"}
