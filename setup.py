"""ament_python packaging of ovseg3d: the library, the training package and the console scripts."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ovseg3d"

setup(
    package_dir={"": "src", "ovseg3d_train": "training"},
    packages=[*find_packages("src"), "ovseg3d_train"],
    py_modules=["ovseg3d_torchvision_hook"],
    package_data={"ovseg3d_train": ["configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/label_sets", glob("config/label_sets/*.yaml")),
    ],
    entry_points={
        "console_scripts": [
            "ovseg3d = ovseg3d.cli:main",
            "ovseg3d-train = ovseg3d_train.cli:main",
            "ovseg3d_node = ovseg3d.ros.node_main:main",
        ],
    },
)
