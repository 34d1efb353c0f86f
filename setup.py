from setuptools import setup

setup(
    name="zero-snr-diffusion",
    version="0.1.0",
    description="Common Diffusion Noise Schedules and Sample Steps are Flawed (Lin et al., WACV 2024), from scratch in PyTorch",
    python_requires=">=3.10",
    packages=["diffusion", "models", "data", "evaluation", "experiments"],
    py_modules=["cli", "train", "sample"],
    install_requires=["torch", "torchvision", "einops", "tqdm"],
    extras_require={"dev": ["pytest"], "figures": ["matplotlib"], "fid": ["torch-fidelity"]},
)
