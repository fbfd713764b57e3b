"""Launch kdbts_node with a parameter file, optionally RViz and a bag played with its clock.

    ros2 launch kdbts_ros kdbts.launch.py
    ros2 launch kdbts_ros kdbts.launch.py config:=/path/params.yaml checkpoint:=/path/model.safetensors
    ros2 launch kdbts_ros kdbts.launch.py bag:=/path/to/bag rviz:=true   (sets use_sim_time)
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "kdbts_ros"
EXECUTABLE = "kdbts_node"
RVIZ_CONFIG = ("rviz", "kdbts.rviz")
DEFAULT_CONFIG = ("config", "default.yaml")


def _actions(context: LaunchContext) -> list:
    arg = lambda name: context.launch_configurations[name]  # noqa: E731
    bag = arg("bag")
    # a bag replays recorded stamps, so every node must follow the bag's /clock
    sim_time = arg("use_sim_time").lower() == "true" or bool(bag)
    params: list = [arg("config"), {"use_sim_time": sim_time}]
    if arg("checkpoint"):
        params.append({"model.checkpoint": arg("checkpoint")})
    actions = [Node(package=PACKAGE, executable=EXECUTABLE, name="kdbts_node", output="screen", parameters=params)]
    if arg("rviz").lower() == "true":
        rviz_file = PathJoinSubstitution([FindPackageShare(PACKAGE), *RVIZ_CONFIG]).perform(context)
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
                            arguments=["-d", rviz_file], parameters=[{"use_sim_time": sim_time}]))
    if bag:
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "play", bag, "--clock"], output="screen"))
    return actions


def generate_launch_description() -> LaunchDescription:
    default_config = PathJoinSubstitution([FindPackageShare(PACKAGE), *DEFAULT_CONFIG])
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="parameter file (see config/default.yaml)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="model checkpoint (.safetensors, or a name fetched with "
                                          "kdbts weights get); empty: the config's choice"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with rviz/kdbts.rviz"),
        DeclareLaunchArgument("bag", default_value="", description="play this bag with --clock (sets use_sim_time)"),
        OpaqueFunction(function=_actions),
    ])
