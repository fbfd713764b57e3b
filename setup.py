"""pip install of kdbts_ros without ROS: the Python package, its message definitions and the CLI.

The metadata, dependencies and package data are in pyproject.toml; this file keeps what it cannot
say: the build_py step that copies msg/*.msg into the package, and the console scripts (declared
dynamic there; the kdbts sub-commands are listed in kdbts_ros.commands.cli.COMMANDS). On a ROS 2
machine colcon builds with CMakeLists.txt instead (package.xml: ament_cmake), which also generates
the msg/ interfaces.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithMsgs(build_py):
    """Copy msg/*.msg into the package so the rosbags typestore finds them after a plain install."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "kdbts_ros" / "interfaces"
        target.mkdir(parents=True, exist_ok=True)
        for msg in Path(__file__).parent.joinpath("msg").glob("*.msg"):
            shutil.copy(msg, target / msg.name)


setup(
    entry_points={
        "console_scripts": ["kdbts = kdbts_ros.commands.cli:main", "kdbts_node = kdbts_ros.ros.node:main"],
    },
    cmdclass={"build_py": BuildPyWithMsgs},
)
