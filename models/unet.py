"""A DDPM-style UNet in plain PyTorch: ε/v/x0 = f(x_t, t, class).

Sinusoidal time embedding, residual blocks (GroupNorm, SiLU, dropout), self-attention at
chosen resolutions, and optional class conditioning whose extra, last embedding row is the
null class used by classifier-free guidance (the label `diffusion.NULL_CLASS` selects it).
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from diffusion import NULL_CLASS

from .detail_skip import DetailSkip


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32
    in_channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (8,)
    dropout: float = 0.0
    num_classes: int = 0  # 0: unconditional
    patch_size: int = 1  # >1: fold p×p pixel patches into channels first, so every level runs p² times cheaper
    scale_shift: bool = False  # time/class embedding scales and shifts the normalised features (ADM), not just adds
    input_skip: bool = False  # add g(t, class)·x_t to the output, a learned per-channel gain (see UNet.forward)
    detail_skip: bool = False  # add (√ᾱ_t/σ_t)·D(x_t), v's pass-through of x_t's finest scale (models/detail_skip.py)


PRESETS = {
    # For tests: < 0.2M parameters.
    "tiny": dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,)),
    # The CPU default: 2×2 patches (every level sees a quarter of the pixels), then a 16×16 UNet of ~1.2M parameters.
    # Its zero-initialised head has no path from x_t to the output, which v needs at small t: the input skip, a learned
    # gain per patch channel, is one; the detail skip passes the finest scale within a patch, which that gain cannot.
    "cpu": dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), patch_size=2,
                scale_shift=True, input_skip=True),
    # DDPM's CIFAR-10 model (Ho et al. 2020): 35.7M parameters, for a GPU.
    "cifar10": dict(base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
    # The same UNet with a fifth level, as DDIM's CelebA 64×64 model (Song et al. 2021), for a GPU.
    "celeba64": dict(base_channels=128, channel_mults=(1, 2, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
}


def unet_config(preset: str, image_size: int, num_classes: int = 0, in_channels: int = 3) -> UNetConfig:
    """The named size preset, for a given image size and number of classes."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = UNetConfig(image_size=image_size, in_channels=in_channels, num_classes=num_classes, **PRESETS[preset])
    check_image_size(config)
    return config


def check_image_size(config: UNetConfig) -> None:
    """Refuse an image side that the patches and the halvings between levels cannot cut evenly."""
    halvings = len(config.channel_mults) - 1
    multiple = config.patch_size * 2**halvings
    if config.image_size % multiple:
        raise ValueError(f"image size {config.image_size} cannot be cut into {config.patch_size}-pixel patches and "
                         f"halved {halvings} times by this UNet; use a multiple of {multiple}")


def patch(x: Tensor, p: int) -> Tensor:
    """Fold each p×p patch of pixels into channels."""
    return rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p)


def unpatch(x: Tensor, p: int) -> Tensor:
    """patch's inverse."""
    return rearrange(x, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoids of the timestep (Vaswani et al. 2017), as in DDPM: [cos(t·f_k), sin(t·f_k)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    """32 groups as in DDPM, but at least 4 channels a group: one-channel groups would be instance
    norm, which wipes out each channel's mean, the very brightness signal this project studies."""
    return nn.GroupNorm(min(32, channels // 4), channels)


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))) with the time and class embedding added to the features between the two
    convolutions (DDPM), or scaling and shifting them after the second norm (ADM's scale-shift). The second convolution
    starts at zero, so the block starts as the identity and a deep UNet trains from its first step."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, scale_shift: bool = False):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.scale_shift = scale_shift
        self.emb = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2, self.dropout = group_norm(out_ch), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = rearrange(self.emb(F.silu(emb)), "b c -> b c 1 1")
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over all positions of a feature map, residual, with a zero-initialised
    output projection (so it too starts as the identity)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv, self.out = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b 1 (h w) c", three=3)
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "b 1 (h w) c -> b c h w", h=h, w=w)
        return x + self.out(out)


class Level(nn.Module):
    """The residual blocks of one resolution, each followed by attention where asked. Not called as a whole: the
    UNet walks its blocks one by one, since on the way down it keeps each block's output as a skip, and on the way
    up it concatenates one skip before each block."""

    def __init__(self, in_chs: list[int], out_ch: int, emb_dim: int, dropout: float, attn: bool, scale_shift: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, out_ch, emb_dim, dropout, scale_shift) for c in in_chs)
        self.attns = nn.ModuleList(Attention(out_ch) if attn else nn.Identity() for _ in in_chs)

    def pairs(self):
        return zip(self.blocks, self.attns)


class UNet(nn.Module):
    """f(x_t, t, class) → a prediction the size of x_t (ε, v or x0: the loss decides which).

    conv_in, then levels of decreasing resolution (ResBlocks, attention where asked, a strided conv between levels), a
    middle block with attention, and levels of increasing resolution whose blocks each take one skip from the way down,
    concatenated on the channels. The skips are a stack: pushed after conv_in, after every block and every downsampling
    on the way down, popped in reverse order on the way up, which is why each up level has one block more than its down
    level. With `patch_size` p > 1 the input's p×p patches are folded into channels first, and the output unfolded at
    the end. With `detail_skip` the output gains the fixed pass-through of x_t's finest scale (`DetailSkip`).
    """

    def __init__(self, config: UNetConfig, alpha_bar: Tensor | None = None):
        """`alpha_bar`: the run's noise schedule ᾱ_t, which the detail skip needs (and only it)."""
        super().__init__()
        check_image_size(config)
        if config.detail_skip and alpha_bar is None:
            raise ValueError("a UNet with the detail skip needs its schedule's alpha_bar")
        if config.detail_skip and config.image_size % 2:
            raise ValueError(f"the detail skip needs an even image size, got {config.image_size}")
        self.detail_skip = DetailSkip(alpha_bar) if config.detail_skip else None
        self.config = config
        ch, emb_dim = config.base_channels, 4 * config.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One row more than classes: the last is the null class of classifier-free guidance.
        self.class_emb = nn.Embedding(config.num_classes + 1, emb_dim) if config.num_classes else None
        pixels = config.in_channels * config.patch_size**2
        self.conv_in = nn.Conv2d(pixels, ch, 3, padding=1)

        chans = [ch * m for m in config.channel_mults]
        skips, res = [ch], config.image_size // config.patch_size
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, out_ch in enumerate(chans):
            in_chs = [skips[-1]] + [out_ch] * (config.num_res_blocks - 1)
            self.down.append(Level(in_chs, out_ch, emb_dim, config.dropout, res in config.attn_resolutions,
                                   config.scale_shift))
            skips += [out_ch] * config.num_res_blocks
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(out_ch, out_ch, 3, stride=2, padding=1))
                skips.append(out_ch)
                res //= 2
        self.mid1 = ResBlock(chans[-1], chans[-1], emb_dim, config.dropout, config.scale_shift)
        self.mid_attn = Attention(chans[-1])
        self.mid2 = ResBlock(chans[-1], chans[-1], emb_dim, config.dropout, config.scale_shift)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        h_ch = chans[-1]
        for i, out_ch in reversed(list(enumerate(chans))):
            in_chs = []
            for _ in range(config.num_res_blocks + 1):
                in_chs.append(h_ch + skips.pop())
                h_ch = out_ch
            self.up.append(Level(in_chs, out_ch, emb_dim, config.dropout, res in config.attn_resolutions,
                                 config.scale_shift))
            if i > 0:
                self.upsample.append(nn.Conv2d(out_ch, out_ch, 3, padding=1))
                res *= 2
        self.norm_out, self.conv_out = group_norm(h_ch), nn.Conv2d(h_ch, pixels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # v = (√ᾱ·x_t − x0)/√(1 − ᾱ): at small t the target is x_t's own noise, amplified by up to 1/√(1 − ᾱ).
        # A gain on x_t, one per output channel and a function of the embedding, passes it through directly,
        # so the UNet does not have to rebuild the noise pixel by pixel through its features. Zero at the start.
        self.skip_gain = nn.Linear(emb_dim, pixels) if config.input_skip else None
        if self.skip_gain is not None:
            nn.init.zeros_(self.skip_gain.weight)
            nn.init.zeros_(self.skip_gain.bias)
        # Weights channels-last (NHWC): oneDNN's and cuDNN's convolutions then run in that layout, fastest on a CPU.
        # .to(device), copy and load_state_dict keep it; the activations follow the weights: callers change nothing.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full(t.shape, NULL_CLASS, device=t.device)
            emb = emb + self.class_emb(torch.where(labels == NULL_CLASS, self.config.num_classes, labels))

        p = self.config.patch_size
        patches = patch(x, p)
        h = self.conv_in(patches)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in level.pairs():
                h = attn(block(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attn in level.pairs():
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2, mode="nearest"))
        out = unpatch(self.conv_out(F.silu(self.norm_out(h))), p)
        if self.skip_gain is not None:
            out = out + unpatch(rearrange(self.skip_gain(F.silu(emb)), "b c -> b c 1 1") * patches, p)
        if self.detail_skip is not None:
            out = out + self.detail_skip(x, t)
        return out

    def config_dict(self) -> dict:
        return asdict(self.config)
