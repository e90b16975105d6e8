"""ament_python package povss_ros (the runtime); also a plain pip-installable Python package.

Only the runtime is installed: `povss_lab` (the synthetic world, training, evaluation, demos)
runs from a checkout. rclpy and the ROS messages are not pip requirements: on a robot they
come from the ROS install, and the core (SAN, personalization, the `povss` CLI) works
without them. The small synthetic-world model installs to share/povss_ros/models/.
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
        # The params file and the RViz2 view (rviz2 -d .../config/povss.rviz).
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        # The Fast DDS profile for camera-sized images, also for the camera driver's use.
        (f"share/{PACKAGE}/config", [f"{PACKAGE}/ros/fastdds_large_images.xml"]),
        (f"share/{PACKAGE}/models", ["models/syn_small.safetensors"]),
    ],
    # The teach UI's page (HTML, JS, CSS) ships inside its package.
    package_data={f"{PACKAGE}.ros": ["*.xml"], f"{PACKAGE}.ros.ui": ["static/*"]},
    install_requires=[
        "torch>=2.1",
        "numpy",
        "opencv-python-headless",
        "open_clip_torch",
        "safetensors",
        "scipy",
        "pillow",
        "rosbags",  # `povss bag`
    ],
    # colcon test runs pytest only when the package declares it as a test requirement.
    extras_require={"test": ["pytest", "imgviz", "matplotlib"],
                    "ui": ["starlette", "uvicorn"]},  # povss_teach_ui (requirements.txt pins them)
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
            "povss_teach_ui = povss_ros.ros.ui.main:main",
        ]
    },
)
