"""The node's parameters: declared from one table that mirrors config/povss.yaml."""

from __future__ import annotations

from pathlib import Path

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..perception import EngineSettings
from ..text_cache import resolve_cache_dir

# name -> default. Types follow the defaults; config/povss.yaml documents each one.
PARAMETERS: dict[str, object] = {
    "weights": "",
    "allow_random_weights": False,
    "variant": "",
    "device": "auto",
    "precision": "fp32",
    "vocabulary": ["coco_stuff"],
    "text_cache_dir": "auto",
    "concept_store": "~/.povss/concepts",
    "input_min_size": 0,
    "capture_buffer_size": 30,
    "teach_default_frames": 5,
    "teach_auto_min_confidence": 0.3,
    "teach_auto_dominance": 2.0,
    "teach_iterations": 200,
    "teach_learning_rate": 0.0005,
    "teach_alpha": 0.1,
    "teach_lambda_m": 10.0,
    "teach_lambda_z": 0.1,
    "teach_even_negative": True,
    "image_qos_reliability": "best_effort",
    "image_qos_depth": 1,
    "diagnostics_period": 1.0,
}


def declare_parameters(node: Node) -> None:
    for name, default in PARAMETERS.items():
        node.declare_parameter(name, default)


def engine_settings(node: Node) -> EngineSettings:
    """Read the declared parameters into the core's settings object."""
    value = {name: node.get_parameter(name).value for name in PARAMETERS}
    return EngineSettings(
        weights=value["weights"] or None,
        allow_random_weights=bool(value["allow_random_weights"]),
        variant=value["variant"] or None,
        device=value["device"],
        precision=value["precision"],
        vocabulary=list(value["vocabulary"]),
        text_cache_dir=resolve_cache_dir(str(value["text_cache_dir"])),
        concept_store=Path(str(value["concept_store"])).expanduser(),
        input_min_size=int(value["input_min_size"]),
        capture_buffer_size=int(value["capture_buffer_size"]),
        teach_default_frames=int(value["teach_default_frames"]),
        auto_min_confidence=float(value["teach_auto_min_confidence"]),
        auto_dominance=float(value["teach_auto_dominance"]),
        iterations=int(value["teach_iterations"]),
        learning_rate=float(value["teach_learning_rate"]),
        alpha=float(value["teach_alpha"]),
        lambda_m=float(value["teach_lambda_m"]),
        lambda_z=float(value["teach_lambda_z"]),
        even_negative=bool(value["teach_even_negative"]),
    )


def image_qos(node: Node) -> QoSProfile:
    """Sensor-data style by default (best effort, keep last 1): never queue stale frames."""
    reliability = str(node.get_parameter("image_qos_reliability").value)
    if reliability not in ("best_effort", "reliable"):
        raise ValueError("image_qos_reliability must be best_effort or reliable")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, int(node.get_parameter("image_qos_depth").value)),
        reliability=ReliabilityPolicy.BEST_EFFORT
        if reliability == "best_effort"
        else ReliabilityPolicy.RELIABLE,
    )
