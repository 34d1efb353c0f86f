from setuptools import setup

setup(
    name="zero-snr-diffusion",
    version="0.1.0",
    description="Common Diffusion Noise Schedules and Sample Steps are Flawed (Lin et al., WACV 2024), from scratch in PyTorch",
    python_requires=">=3.10",
    # The library alone: the scripts, data/, evaluation/ and experiments/ run from the checkout,
    # so that no top-level `data` or `cli` lands in site-packages to shadow someone else's.
    packages=["diffusion", "models"],
    install_requires=["torch", "torchvision", "einops", "tqdm"],
    extras_require={"dev": ["pytest"], "figures": ["matplotlib"], "fid": ["torch-fidelity"], "diffusers": ["diffusers"]},
)
