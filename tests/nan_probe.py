"""Run by the tests: train.py whose loss at one step (NAN_STEP) is finite but has a NaN gradient."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file, from tests/
import train  # noqa: E402

NAN_STEP = int(sys.argv.pop(1))
real_loss, calls = train.diffusion_loss, []


def loss_with_a_nan_gradient(model, *args, **kwargs):
    loss = real_loss(model, *args, **kwargs)
    calls.append(1)
    if len(calls) == NAN_STEP:
        # sqrt at 0: the value is 0, its gradient 0.5/√0 · 0 = NaN.
        loss = loss + (0 * next(model.parameters())).sum().sqrt()
    return loss


train.diffusion_loss = loss_with_a_nan_gradient
if __name__ == "__main__":
    train.run(train.main)
