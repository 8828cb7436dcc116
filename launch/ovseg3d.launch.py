"""Launch the ovseg3d perception node on a real ROS 2 install (launch and launch_ros are not on PyPI).

    ros2 launch ovseg3d ovseg3d.launch.py checkpoint:=/path/student.pt \
        rgb_topic:=/camera/color/image_raw depth_topic:=/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/color/camera_info lidar_topic:=/velodyne_points [rviz:=true]
        [rgb_transport:=compressed depth_transport:=compressedDepth]
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "params_file": (PathJoinSubstitution([FindPackageShare("ovseg3d"), "config", "ovseg3d.yaml"]),
                    "ROS parameters file of the node (defaults: config/ovseg3d.yaml)"),
    "checkpoint": ("", "student checkpoint file; overrides the params file's 'checkpoint'"),
    "namespace": ("", "namespace of the node and its topics"),
    "use_sim_time": ("false", "use /clock (true when replaying a bag with --clock)"),
    "lifecycle": ("false", "true: start unconfigured and wait for a lifecycle manager; false: start working"),
    "rgb_topic": ("rgb/image", "colour image topic (remapped to the node's rgb/image)"),
    "depth_topic": ("depth/image", "depth image topic, 16UC1 mm or 32FC1 m, registered to the colour camera"),
    "camera_info_topic": ("rgb/camera_info", "CameraInfo of the depth/colour camera"),
    "lidar_topic": ("lidar/points", "LiDAR PointCloud2 topic"),
    "rgb_transport": ("raw", "raw, or compressed: image_transport's jpeg/png on <rgb_topic>/compressed"),
    "depth_transport": ("raw", "raw, or compressedDepth: image_transport's png/rvl on <depth_topic>/compressedDepth"),
    "rviz": ("false", "true: also start RViz2 with config/ovseg3d.rviz (map, instances, query answer, TF)"),
    "rviz_config": (PathJoinSubstitution([FindPackageShare("ovseg3d"), "config", "ovseg3d.rviz"]),
                    "RViz2 configuration file used with rviz:=true"),
}


def generate_launch_description() -> LaunchDescription:
    args = [DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, text) in ARGUMENTS.items()]
    cfg = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    common = {
        "package": "ovseg3d",
        "executable": "ovseg3d_node",
        "name": "ovseg3d",
        "namespace": cfg["namespace"],
        "output": "screen",
        "parameters": [cfg["params_file"], {"use_sim_time": cfg["use_sim_time"]}],
        "remappings": [("rgb/image", cfg["rgb_topic"]), ("depth/image", cfg["depth_topic"]),
                       ("rgb/camera_info", cfg["camera_info_topic"]), ("lidar/points", cfg["lidar_topic"])],
    }
    checkpoint = [{"checkpoint": cfg["checkpoint"], "rgb.transport": cfg["rgb_transport"],
                   "depth.transport": cfg["depth_transport"]}]
    plain = Node(**{**common, "parameters": common["parameters"] + checkpoint},
                 condition=UnlessCondition(cfg["lifecycle"]))
    managed = LifecycleNode(**{**common, "parameters": common["parameters"] + checkpoint + [{"autostart": False}]},
                            condition=IfCondition(cfg["lifecycle"]))
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", cfg["rviz_config"]],
                parameters=[{"use_sim_time": cfg["use_sim_time"]}], output="screen", condition=IfCondition(cfg["rviz"]))
    return LaunchDescription([*args, plain, managed, rviz])
