"""The training step never waits on the device: it reads a value back once a --log-every window, and the
samplers and losses not at all."""
import sys

import pytest
import torch

import runtime
import train
from diffusion import Guidance, diffusion_loss, flow_loss, get_timesteps, guided_denoiser, initial_noise, make_schedule, sample
from models import UNet, unet_config
from train import TrainConfig

READS = ("item", "tolist", "__bool__", "__float__", "__int__")


def test_the_training_loop_reads_the_device_once_per_log_window(tmp_path, monkeypatch):
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            caller = sys._getframe(1).f_code  # train.py (the loop and the closures it calls), or the window it reads through
            if caller.co_filename == train.__file__ or (caller.co_filename, caller.co_name) == (runtime.__file__, "read"):
                reads.append(caller.co_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    config = TrainConfig(model="tiny", image_size=16, num_images=64, batch_size=4, steps=30, log_every=10,
                         ckpt_every=30, out=str(tmp_path))
    train.train(config)
    assert len(reads) == 3  # steps 10, 20 and 30: one read each, for the loss and the divergence check together


# On the meta device a tensor has a shape and no values: any read of one back to the host fails, so a
# sampler or a loss that runs there waits on the device nowhere (the schedule's tables stay on the host).
@pytest.mark.parametrize("sampler, prediction", [("ddim", "x0"), ("ddim", "v"), ("dpmpp-2m", "v")])
def test_the_samplers_with_rescaled_guidance_never_read_the_device(sampler, prediction):
    model = UNet(unet_config("tiny", 16, num_classes=4)).to("meta")
    schedule = make_schedule("scaled_linear", zero_snr=True)
    denoise = guided_denoiser(model, schedule, prediction, torch.tensor([0, 3], device="meta"), Guidance(3.0, 0.7))
    out = sample(denoise, initial_noise((2, 3, 16, 16)).to("meta"), schedule, get_timesteps(1000, 4, "trailing"),
                 sampler=sampler, progress=False)
    assert out.device.type == "meta"


@pytest.mark.parametrize("loss_space", [None, "v"])
def test_the_losses_and_the_ema_update_never_read_the_device(loss_space):
    model = UNet(unet_config("tiny", 16, num_classes=4)).to("meta")
    x0, labels = torch.empty(2, 3, 16, 16, device="meta"), torch.empty(2, dtype=torch.long, device="meta")
    schedule = make_schedule("scaled_linear", zero_snr=True)
    losses = [diffusion_loss(model, x0, schedule, "x0", labels, offset_noise=0.1, loss_space=loss_space),
              flow_loss(model, x0, labels)]
    train.update_ema(UNet(unet_config("tiny", 16, num_classes=4)).to("meta"), model, 0.999, 10)
    assert all(loss.device.type == "meta" for loss in losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_sampling_and_the_loss_never_synchronise_with_the_host():
    model = UNet(unet_config("tiny", 16, num_classes=4)).cuda()
    schedule = make_schedule("scaled_linear", zero_snr=True)
    labels, x0 = torch.tensor([0, 3]).cuda(), torch.rand(2, 3, 16, 16).cuda()
    diffusion_loss(model, x0, schedule, "v", labels)  # first call: the ᾱ table is copied to the device once
    torch.cuda.set_sync_debug_mode("error")
    try:
        diffusion_loss(model, x0, schedule, "v", labels, loss_space="x0").backward()
        sample(guided_denoiser(model, schedule, "x0", labels, Guidance(3.0, 0.7)), initial_noise((2, 3, 16, 16)).cuda(),
               schedule, get_timesteps(1000, 3, "trailing"), progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
