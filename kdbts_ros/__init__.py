"""kdbts_ros: single- and multi-view neural density fields (BTS / MVBTS / KDBTS) for ROS 2."""

__version__ = "0.1.0"
