"""The only package that imports rclpy: node, message conversions, capture buffer."""
