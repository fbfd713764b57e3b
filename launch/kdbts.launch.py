"""Launch kdbts_node with a parameter file, optionally RViz and a bag played with one clock.

    ros2 launch kdbts_ros kdbts.launch.py
    ros2 launch kdbts_ros kdbts.launch.py config:=kitti_raw checkpoint:=/path/model.safetensors
    ros2 launch kdbts_ros kdbts.launch.py bag:=/path/to/bag rviz:=true config:=kitti360   (sets use_sim_time)
    ros2 launch kdbts_ros kdbts.launch.py namespace:=front remappings:="camera/image_raw:=/cam0/image_raw"

``config:=`` takes a parameter file or a preset of share/kdbts_ros/config by name. ``namespace:=``
and ``name:=`` place the node (its relative topics resolve under the namespace: /front/kdbts/occupancy;
its parameter file applies through its ``/**`` section or one keyed by that name);
``remappings:=`` takes ``from:=to`` pairs separated by spaces or commas. A bag that has /clock
is played as it is, any other with ``--clock``. RViz (rviz:=true) and bag play (bag:=) are not
dependencies of the package: when they are not installed the launch says so in one line and
starts nothing. RViz opens on the parameter file's fixed frame and the node's topics. The node is
stopped with the launch (and stops the launch when it ends).
"""

import tempfile
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch_ros.actions import Node

from kdbts_ros.ros import launch_plan
from launch import LaunchContext, LaunchDescription

PACKAGE = "kdbts_ros"
EXECUTABLE = "kdbts_node"
RVIZ_CONFIG = ("rviz", "kdbts.rviz")
DEFAULT_CONFIG = ("config", "default.yaml")


def _actions(context: LaunchContext) -> list:
    arg = lambda name: context.launch_configurations[name]  # noqa: E731
    share = Path(get_package_share_directory(PACKAGE))
    config = launch_plan.resolve_config(arg("config"), share / DEFAULT_CONFIG[0])
    # every check comes before the first action: a launch that cannot work starts nothing
    plan = launch_plan.node_plan(config, arg("namespace"), arg("name"), arg("remappings"))
    bag, rviz = arg("bag"), arg("rviz").lower() == "true"
    if rviz:
        launch_plan.require_rviz()
    if bag:
        launch_plan.require_bag_player(bag)
        play = launch_plan.bag_play_command(bag)
    # a bag replays recorded stamps, so every node must follow the bag's /clock
    sim_time = arg("use_sim_time").lower() == "true" or bool(bag)
    params: list = [str(config), {"use_sim_time": sim_time}]
    if arg("checkpoint"):
        params.append({"model.checkpoint": arg("checkpoint")})
    if arg("autostart"):
        params.append({"autostart": arg("autostart").lower() == "true"})
    actions = [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=plan.name,
            namespace=plan.namespace,
            remappings=list(plan.remappings),
            output="screen",
            parameters=params,
            arguments=["--exit-with-parent"],
            respawn=False,
            on_exit=Shutdown(reason=f"{plan.fully_qualified_name} exited"),
        )
    ]
    if rviz:
        rviz_file = launch_plan.write_rviz_config(
            share.joinpath(*RVIZ_CONFIG), plan, config, Path(tempfile.mkdtemp(prefix="kdbts_rviz_"))
        )
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                output="log",
                arguments=["-d", str(rviz_file)],
                parameters=[{"use_sim_time": sim_time}],
            )
        )
    if bag:
        actions.append(ExecuteProcess(cmd=play, output="screen"))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value="default",
                description="parameter file, or a preset by name: default, kitti_raw (colour "
                "pair), kitti_gray (grey pair), kitti360",
            ),
            DeclareLaunchArgument(
                "checkpoint",
                default_value="",
                description="model checkpoint (.safetensors, or a name fetched with "
                "kdbts weights get); empty: the config's choice",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="the node's namespace: its relative topics go under it"
            ),
            DeclareLaunchArgument("name", default_value="kdbts_node", description="the node's name"),
            DeclareLaunchArgument(
                "remappings",
                default_value="",
                description="topic remappings from:=to, separated by spaces or commas "
                "(camera/image_raw:=/cam0/image_raw)",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="",
                description="true: the node configures and activates itself; false: it waits for a lifecycle "
                "manager (config/nav2_lifecycle.yaml); empty: the config's",
            ),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
            DeclareLaunchArgument(
                "rviz", default_value="false", description="start RViz on the config's fixed frame and camera"
            ),
            DeclareLaunchArgument(
                "bag", default_value="", description="play this bag (its own /clock, else --clock); sets use_sim_time"
            ),
            OpaqueFunction(function=_actions),
        ]
    )
