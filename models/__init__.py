from .unet import PRESETS, UNet, UNetConfig, unet_config

__all__ = ["PRESETS", "UNet", "UNetConfig", "unet_config"]
