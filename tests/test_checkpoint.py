"""Checkpoints: equal contents give equal bytes, whatever the file is called."""

import hashlib
import zipfile

import torch

from grainflow.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint, sha256_file
from grainflow.models import build_model


def _checkpoint():
    torch.manual_seed(0)
    model = build_model("unet", depth=2, base_channels=4)
    return make_checkpoint(
        model=model,
        model_name="unet",
        model_kwargs={"depth": 2, "base_channels": 4},
        epoch=3,
        step=12,
        config={"lr": 1e-3},
        extra={"fold": 0},
        with_rng=False,
    )


def test_equal_checkpoints_are_equal_bytes_under_any_name(tmp_path):
    checkpoint = _checkpoint()
    a = save_checkpoint(tmp_path / "run1" / "best.pt", checkpoint)
    b = save_checkpoint(tmp_path / "run2" / "other_name.pt", checkpoint)
    assert a.read_bytes() == b.read_bytes()
    assert sha256_file(a) == hashlib.sha256(b.read_bytes()).hexdigest()
    # the archive inside carries no file name, temporary or final
    names = zipfile.ZipFile(a).namelist()
    assert all(not n.startswith((".best.pt", "best", "other_name")) for n in names), names
    assert not list((tmp_path / "run1").glob(".*.tmp"))


def test_a_saved_checkpoint_loads_with_its_weights(tmp_path):
    checkpoint = _checkpoint()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "best.pt", checkpoint))
    assert loaded["epoch"] == 3 and loaded["extra"] == {"fold": 0}
    for key, value in checkpoint["model_state"].items():
        assert torch.equal(loaded["model_state"][key], value)
