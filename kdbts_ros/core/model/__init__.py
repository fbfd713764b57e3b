"""BTS / MVBTS / KDBTS networks, rendering and checkpoints (no ROS imports)."""
