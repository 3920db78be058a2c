"""Multi-process training (DistributedDataParallel): two gloo CPU processes match one process.

The equivalence is exact up to float rounding, not loosened: the global batch is the same
(8 = 2 processes x 4), every process's loss is that of the global batch (its sums are
all-reduced), and the model uses group norm, because torch synchronises BatchNorm
(SyncBatchNorm) on CUDA only. The differences left come from summing the gradients of 4 + 4
images instead of 8 in one reduction: about 1e-7 relative per step (measured: 1.2e-7 on the
losses after 6 steps, 8e-6 on the weights). The tolerance rtol 1e-5 is 100 times that and 100
times smaller than the gap left without the all-reduced loss (3e-3 to 1e-2 on the training
loss, checked below), so the test fails if any part of the equivalence breaks.
"""

import math

import numpy as np
import pytest
import torch
from test_training import drop_timing, line_data, tiny_config

import grainflow.training.loop as training
from grainflow.training import losses
from grainflow.training.config import TrainConfig, arch_settings
from grainflow.training.data import EpochSampler
from grainflow.training.distributed import world_size_for
from grainflow.training.loop import train
from grainflow.training.losses import DiceCELoss

MODEL = ("unet", {"depth": 2, "base_channels": 8, "norm": "group", "groups": 4})
DATA_SEEDS = (0, 1)


@pytest.fixture(scope="module")
def data():
    return line_data(16, size=32, seed=DATA_SEEDS[0]), line_data(4, size=32, seed=DATA_SEEDS[1])


def config(**overrides):
    return tiny_config(**{"epochs": 3, "batch_size": 8, **overrides})


def run(folder, data, world_size, model=MODEL, **kwargs):
    kwargs.setdefault("config", config())
    return train(
        model[0],
        model[1],
        data[0],
        data[1],
        best_path=folder / "best.pt",
        history_path=folder / "history.tsv",
        last_path=folder / "last.pt",
        world_size=world_size,
        **kwargs,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """One process and two processes, same global batch, same seed."""
    root = tmp_path_factory.mktemp("ddp")
    calls = root / "calls.txt"

    def on_epoch_end(epoch, row):  # runs in the forked process 0: leave a trace on disk
        with open(calls, "a") as f:
            f.write(f"{epoch}\n")

    one = run(root / "one", data, 1)
    two = run(root / "two", data, 2, on_epoch_end=on_epoch_end)
    return root, one, two, calls.read_text().split()


def assert_same_curve(a, b, *, rtol):
    a, b = drop_timing(a), drop_timing(b)
    assert [list(r) for r in a] == [list(r) for r in b]
    for ra, rb in zip(a, b):
        assert (ra["epoch"], ra["step"]) == (rb["epoch"], rb["step"])
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=rtol, abs=0), (key, ra, rb)


def test_two_gloo_processes_follow_the_one_process_loss_curve(runs):
    root, one, two, calls = runs
    assert len(one.history) == len(two.history) == 3
    assert_same_curve(one.history, two.history, rtol=1e-5)
    assert one.best_epoch == two.best_epoch and two.resumed_from_epoch == 0
    for (name, a), (_, b) in zip(one.model.state_dict().items(), two.model.state_dict().items()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    # the weights did move: the comparison is not between two initialisations
    fresh = training._build(*MODEL, config())[0].state_dict()
    assert max(float((fresh[k] - v).abs().max()) for k, v in one.model.state_dict().items()) > 1e-2
    # the same files, written once, by process 0 only
    for run_dir in ("one", "two"):
        assert sorted(p.name for p in (root / run_dir).iterdir()) == [
            "best.pt",
            "history.tsv",
            "last.pt",
            "last.timings.json",
        ]
    assert (root / "two" / "history.tsv").read_text().count("\n") == 4
    assert calls == ["1", "2", "3"]  # on_epoch_end: once per epoch, not once per process


def test_without_the_global_batch_loss_the_curves_part(tmp_path, data, runs, monkeypatch):
    # control: each process's own loss, averaged by DDP (mean of per-process weighted
    # cross-entropy and batch Dice) is not the loss of the global batch
    monkeypatch.setattr(losses, "sum_over_processes", lambda local: local)
    naive = run(tmp_path, data, 2)
    gaps = [
        abs(a["train_loss"] - b["train_loss"]) / a["train_loss"]
        for a, b in zip(runs[1].history, naive.history)
    ]
    assert max(gaps) > 1e-3


def test_a_killed_distributed_run_resumes_to_the_same_weights(tmp_path, data, runs):
    def stop(epoch, row):
        if epoch == 2:
            raise RuntimeError("killed after epoch 2")

    # process 0 raises; torch reports whichever process it sees end first: process 0 with
    # the error, or process 1, which lost its peer in the next epoch's all-reduce
    with pytest.raises(Exception, match="killed after epoch 2|Connection closed by peer"):
        run(tmp_path, data, 2, on_epoch_end=stop)
    assert not (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    resumed = run(tmp_path, data, 2)
    assert resumed.resumed_from_epoch == 2
    uninterrupted = runs[2]
    assert drop_timing(resumed.history) == drop_timing(uninterrupted.history)
    for k, v in uninterrupted.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_the_processes_share_each_global_batch():
    for n, batch, world in ((16, 8, 2), (10, 4, 2), (12, 6, 3)):
        single = EpochSampler(n, seed=5)
        shards = [EpochSampler(n, seed=5, num_replicas=world, rank=r) for r in range(world)]
        for s in (single, *shards):
            s.set_epoch(3)
        order = list(single)
        parts = [list(s) for s in shards]
        assert [len(p) for p in parts] == [len(s) for s in shards] == [n // world] * world
        local = batch // world
        for b in range(math.ceil(n / batch)):
            together = sorted(k for p in parts for k in p[b * local : (b + 1) * local])
            assert together == sorted(order[b * batch : (b + 1) * batch])
    # an odd count is padded with the first keys, as DistributedSampler does
    shards = [list(EpochSampler(9, seed=5, num_replicas=2, rank=r)) for r in range(2)]
    keys = shards[0] + shards[1]
    assert len(keys) == 10 and len(set(keys)) == 9
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(9, seed=5, num_replicas=2, rank=2)


def test_bad_distributed_settings_are_refused(tmp_path, data):
    with pytest.raises(ValueError, match="multiple of 3"):
        run(tmp_path, data, 3)
    with pytest.raises(ValueError, match="world_size"):
        run(tmp_path, data, 0)
    batchnorm = ("unet", {"depth": 2, "base_channels": 4, "norm": "batch"})
    with pytest.raises(Exception, match="SyncBatchNorm"):  # raised in the forked processes
        run(tmp_path, data, 2, model=batchnorm, config=config(epochs=1))
    assert not (tmp_path / "best.pt").exists()


def _loss_in_process(rank, world_size, folder, logits, target):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size
    )
    try:
        mine = logits[rank::world_size].clone().requires_grad_()
        loss_fn = DiceCELoss(class_weights=(1.0, 4.0), distributed=True)
        loss = loss_fn(mine, target[rank::world_size])
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": mine.grad}, folder / f"{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_the_distributed_loss_is_the_global_batch_loss(tmp_path):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 8, 8, generator=g)
    target = (torch.rand(4, 8, 8, generator=g) > 0.7).long()
    whole = logits.clone().requires_grad_()
    reference = DiceCELoss(class_weights=(1.0, 4.0))(whole, target)
    reference.backward()
    # spawn, not fork: a fork of this pytest process (its threads, its locks) can hang
    torch.multiprocessing.start_processes(
        _loss_in_process, args=(2, tmp_path, logits, target), nprocs=2, start_method="spawn"
    )
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        # each process holds the loss of all 4 images, not of its own 2
        torch.testing.assert_close(got["loss"], reference.detach())
        # and 2 x its images' share of the gradient, which DDP's average turns into the sum
        torch.testing.assert_close(got["grad"], 2 * whole.grad[rank::2])
    own = DiceCELoss(class_weights=(1.0, 4.0))(logits[0::2], target[0::2])
    assert abs(own.item() - reference.item()) > 1e-3  # the halves' losses differ from it


def test_world_size_follows_the_visible_gpus(monkeypatch, caplog):
    assert world_size_for(4, device="cpu") == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert world_size_for(2, device="auto") == 1  # no GPU: the CPU, one process
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert world_size_for(1) == 1 and world_size_for(2) == 2 and world_size_for(4) == 4
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert world_size_for(4) == 2
    assert "granted 4 GPUs but sees 2" in caplog.text
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="gpus"):
            world_size_for(bad)
    # gpus_per_job is a job setting, not a TrainConfig field
    _, _, cfg = arch_settings({"model": "unet"}, shared={"gpus_per_job": 2, "device": "cpu"})
    assert cfg == TrainConfig(device="cpu")
