"""Layer 0, the ROS-free core: configuration model, errors, geometry, camera, grids, TF buffer, network,
rendering, checkpoints and the stateless stages (encode, query the field, render depth).
"""
