"""povss_ros: SAN open-vocabulary segmentation with personal concepts, under a thin ROS layer."""
