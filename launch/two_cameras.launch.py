"""Launch one kdbts_node per camera, each in its own namespace, from one parameter file.

    ros2 launch kdbts_ros two_cameras.launch.py
    ros2 launch kdbts_ros two_cameras.launch.py config:=/path/robot.yaml cameras:=front,left,rear

``cameras:=`` names the namespaces (comma separated), one node each: /front/kdbts_node reads the
camera /front/camera/image_raw and publishes /front/kdbts/occupancy, ... (its relative topics), its
diagnostics named after it. ``config:=`` (a file, or a preset of share/kdbts_ros/config by name)
holds a ``/**`` section every node reads and one section per node (``/front/kdbts_node``) with what
is its own. Everything is checked before anything starts: each node's section, and that no two nodes
read the same camera or publish the same topic. For RViz or a bag, see kdbts.launch.py.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch_ros.actions import Node

from kdbts_ros.ros import launch_plan
from launch import LaunchContext, LaunchDescription

PACKAGE = "kdbts_ros"
EXECUTABLE = "kdbts_node"
DEFAULT_CONFIG = ("config", "two_cameras.yaml")


def _actions(context: LaunchContext) -> list:
    arg = lambda name: context.launch_configurations[name]  # noqa: E731
    share = Path(get_package_share_directory(PACKAGE))
    config = launch_plan.resolve_config(arg("config"), share / DEFAULT_CONFIG[0])
    plans = launch_plan.camera_nodes(config, arg("cameras"))
    params: list = [str(config), {"use_sim_time": arg("use_sim_time").lower() == "true"}]
    if arg("checkpoint"):
        params.append({"model.checkpoint": arg("checkpoint")})
    if arg("autostart"):
        params.append({"autostart": arg("autostart").lower() == "true"})
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=plan.name,
            namespace=plan.namespace,
            output="screen",
            parameters=params,
            arguments=["--exit-with-parent"],
            respawn=False,
            on_exit=Shutdown(reason=f"{plan.fully_qualified_name} exited"),
        )
        for plan in plans
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value="two_cameras",
                description="parameter file with a /** section and one per node (/front/kdbts_node), "
                "or a preset by name",
            ),
            DeclareLaunchArgument(
                "cameras", default_value="front,rear", description="namespaces, one node each, comma separated"
            ),
            DeclareLaunchArgument(
                "checkpoint", default_value="", description="model checkpoint for every node; empty: the config's"
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="",
                description="true: the node configures and activates itself; false: it waits for a lifecycle "
                "manager (config/nav2_lifecycle.yaml); empty: the config's",
            ),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
            OpaqueFunction(function=_actions),
        ]
    )
