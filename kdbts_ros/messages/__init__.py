"""Layer 1: ROS 2 messages as CDR bytes (rosbags typestore, no torch, no rclpy), and bags read back."""
