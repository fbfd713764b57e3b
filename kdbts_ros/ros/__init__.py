"""The rclpy adapter: the only part of kdbts_ros that imports ROS."""
