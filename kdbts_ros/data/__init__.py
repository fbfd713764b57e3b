"""Layer 2: datasets (KITTI raw, odometry, KITTI-360, procedural streets), image files, map files and bag writing."""
