"""Layer 0, the ROS-free core: configuration model, errors, geometry, camera, grids, window, TF buffer, network,
rendering, checkpoints and the pipeline.
"""
