"""Run under torchrun by the tests: train, then let every rank save what it holds, so a test can
compare the ranks (train.py itself writes only rank 0's checkpoint)."""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file, from tests/
import train  # noqa: E402

if __name__ == "__main__":
    given, _ = train.parse_args(sys.argv[1:])
    config = train.TrainConfig(**given)
    model_holder = {}
    real_ddp = train.DistributedDataParallel

    def keep(model, *args, **kwargs):  # remember the model and EMA each rank trains
        model_holder["model"] = model
        return real_ddp(model, *args, **kwargs)

    train.DistributedDataParallel = keep
    original_update = train.update_ema

    def update(ema, model, decay, step):
        model_holder["ema"] = ema
        original_update(ema, model, decay, step)

    train.update_ema = update
    rank = int(os.environ["RANK"])
    train.train(config)
    torch.save({"model": model_holder["model"].state_dict(), "ema": model_holder["ema"].state_dict()},
               f"{config.out}/rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()
