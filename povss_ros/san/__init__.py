"""SAN (Side Adapter Network) rebuilt in plain PyTorch: no ROS, no personalization."""
