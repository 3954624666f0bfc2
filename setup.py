from setuptools import find_packages, setup

setup(
    name="udocker",
    version="2.0.0.dev0",
    description="Pull container images and run them without root (PRoot, Fakechroot, rootless runc/crun)",
    packages=find_packages(include=["udocker", "udocker.*"]),
    package_data={"udocker": ["data/*"]},
    python_requires=">=3.9",
    install_requires=["click>=7.1", "requests>=2.25", "pyyaml>=5.3", "psutil>=5.8", "nvidia-ml-py>=11.450",
                      "PySocks>=1.5.6,!=1.5.7"],
    extras_require={"test": ["pytest>=7", "pytest-timeout", "ruff"]},
    # a plain script, not a console_scripts entry point: pip's generated script imports re (scripts/udocker)
    scripts=["scripts/udocker"],
)
