"""ROS-free core: camera, geometry, model, grids, window and the pipeline."""
