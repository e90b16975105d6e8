"""ament_python package povss_ros (the runtime); also a plain pip-installable Python package.

Only the runtime is installed: `povss_lab` (the synthetic world, training, evaluation, demos)
runs from a checkout. rclpy and the ROS messages are not pip requirements: on a robot they
come from the ROS install, and the core (SAN, personalization, the `povss` CLI) works
without them. The small synthetic-world model installs to share/povss_ros/models/.
"""

import platform
from glob import glob
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

PACKAGE = "povss_ros"


class OptionalBuildExt(build_ext):
    """Builds the bf16 attention kernel where a C++ compiler is at hand; without it the
    package still installs and attention runs on torch's kernel (`povss_ros.san.attention`)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure
            print(f"povss_ros: bf16 attention kernel not built ({error}); using torch's")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            # An older build left in place would be imported as if it were this one.
            Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            raise


# x86-64 only. The kernel's own code is compiled for AVX512-BF16 (a pragma in the source);
# the rest of the module is plain x86-64 and says at run time whether the CPU has it.
EXTENSIONS = [
    Extension(
        f"{PACKAGE}.san._bf16_attention",
        sources=[f"{PACKAGE}/san/_bf16_attention.cpp"],
        extra_compile_args=["-O3", "-std=c++17"],
        extra_link_args=["-pthread"],
    )
] if platform.machine() in ("x86_64", "AMD64") else []


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": OptionalBuildExt},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        # The params file and the RViz2 view (rviz2 -d .../config/povss.rviz).
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        # The Fast DDS profile for camera-sized images, also for the camera driver's use.
        (f"share/{PACKAGE}/config", [f"{PACKAGE}/ros/fastdds_large_images.xml"]),
        (f"share/{PACKAGE}/models", ["models/syn_small.safetensors"]),
    ],
    package_data={f"{PACKAGE}.ros": ["*.xml"]},
    install_requires=[
        "torch>=2.1",
        "numpy",
        "opencv-python-headless",
        "open_clip_torch",
        "safetensors",
        "scipy",
    ],
    # colcon test runs pytest only when the package declares it as a test requirement.
    extras_require={"test": ["pytest", "imgviz", "matplotlib"]},
    zip_safe=False,
    maintainer="povss_ros maintainers",
    maintainer_email="maintainers@povss.dev",
    description="Open-vocabulary segmentation with personal concepts for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "povss = povss_ros.cli:main",
            "povss_node = povss_ros.ros.node:main",
        ]
    },
)
