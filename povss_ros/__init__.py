"""povss_ros: open-vocabulary segmentation (SAN) with personal concepts, under a thin ROS 2 layer."""
