"""Layer 6, the rclpy adapter: the only part of kdbts_ros that imports rclpy (node, launch plan, in-process
harnesses).
"""
