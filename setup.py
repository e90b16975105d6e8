"""ament_python package povss_ros; also a plain pip-installable Python package.

rclpy and the ROS messages are NOT install requirements: on a robot they come from the ROS
install (apt), and the core (`povss_ros.san`, `.personal`, `.eval`, the CLI) works without them.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "povss_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        # The Fast DDS profile for camera-sized images, also for the camera driver's use.
        (f"share/{PACKAGE}/config", [f"{PACKAGE}/ros/fastdds_large_images.xml"]),
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
    extras_require={"dev": ["pytest", "ruff", "imgviz", "matplotlib"]},
    zip_safe=True,
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
