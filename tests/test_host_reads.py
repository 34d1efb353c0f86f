"""The training step never waits on the device: it reads a value back once a --log-every window."""
import sys

import torch

import runtime
import train
from train import TrainConfig

READS = ("item", "tolist", "__bool__", "__float__", "__int__")


def test_the_training_loop_reads_the_device_once_per_log_window(tmp_path, monkeypatch):
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            caller = sys._getframe(1).f_code  # the loop itself, or the window it reads through
            if (caller.co_filename, caller.co_name) in {(train.__file__, "train"), (runtime.__file__, "read")}:
                reads.append(caller.co_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    config = TrainConfig(model="tiny", image_size=16, num_images=64, batch_size=4, steps=30, log_every=10,
                         ckpt_every=30, out=str(tmp_path))
    train.train(config)
    assert len(reads) == 3  # steps 10, 20 and 30: one read each, for the loss and the divergence check together
