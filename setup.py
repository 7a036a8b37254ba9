"""vae-augment: VAE-based synthetic digit generation with Apache Beam.

Also the file Dataflow stages with `--setup_file ./setup.py`, so workers install the same package.
"""
from setuptools import find_packages, setup

setup(
    name="vae-augment",
    version="0.1.0",
    description="Batch data augmentation for image classifiers: a Keras VAE decoded by Apache Beam workers",
    python_requires=">=3.10,<3.13",
    # the repo's top-level configs/ ships inside the package as vae_model.configs (`--config NAME`)
    packages=find_packages(include=["vae_model", "vae_model.*", "pipeline", "pipeline.*"]) + ["vae_model.configs"],
    package_dir={"vae_model.configs": "configs"},
    package_data={"vae_model": ["pretrained/*/*.keras", "pretrained/*/*.json", "pretrained/*/*.npz",
                                "pretrained/*/plots/*.png"],
                  "vae_model.configs": ["*.yaml"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.3,<4",
        "apache-beam>=2.60,<3",
        "numpy>=1.26",
        "pyarrow>=14",
        "pandas>=2",
        "click>=8.1",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "google-crc32c>=1.5",
        "threadpoolctl>=3",
    ],
    extras_require={
        "gcp": ["apache-beam[gcp]>=2.60,<3"],
        "test": ["pytest>=8", "pytest-xdist>=3", "tensorflow-hub>=0.16", "selenium>=4.20", "gcp-storage-emulator",
                 # downstream readers the tests load an output with (Hugging Face, TFDS)
                 "datasets>=3", "tensorflow-datasets>=4.9.7"],
    },
    entry_points={
        "console_scripts": ["vae-augment=pipeline.cli:main"],
        # data-source kinds beyond vae_model's own (see vae_model/data/source.py); vae_model never imports pipeline
        "vae_augment.sources": ["parquet = pipeline.dataset.source"],
    },
)
