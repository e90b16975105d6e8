"""What `launch/perception.launch.py` makes of its arguments: the node's parameter overrides
and remappings, as a plain function of the arguments' text.

The launch file only reads its `LaunchConfiguration`s and builds the node; the parsing lives
here, where tests reach it without `launch_ros` (which is not on PyPI). No ROS import: this
runs inside `ros2 launch`, before any node.
"""

from __future__ import annotations

from collections.abc import Mapping

# The launch arguments `node_arguments` reads (the launch file declares them, and more).
NODE_ARGUMENTS = ("weights", "device", "vocabulary", "autostart", "image_topic",
                  "camera_info_topic", "depth_topic", "cameras")
# The image_topic launch argument's default; with named cameras it means "no remapping".
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
# In a topic argument with named cameras, this stands for each camera's name.
CAMERA_FIELD = "{camera}"
# The launch arguments `teach_ui_arguments` reads (the teach page, povss_teach_ui).
TEACH_UI_ARGUMENTS = ("teach_ui", "teach_ui_host", "teach_ui_port", "teach_ui_token",
                      "teach_ui_camera")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def vocabulary_words(text: str) -> list[str]:
    """The `vocabulary` launch argument -> words: a YAML list "[mug, cup]" or "mug, cup"."""
    return text_list("vocabulary", text, "[mug, cup]")


def text_list(argument: str, text: str, example: str) -> list[str]:
    """A launch argument holding a list -> its entries: a YAML list "[a, b]" or "a, b"
    (blank entries dropped); ValueError names `argument` when it holds none."""
    import yaml  # the launch process has it (ros2 launch needs it); the node does not

    text = text.strip()
    try:
        words = yaml.safe_load(text) if text.startswith("[") else text.split(",")
    except yaml.YAMLError as exc:
        raise ValueError(f"{argument}:={text!r} is not a YAML list: {exc}") from None
    if not isinstance(words, list):
        raise ValueError(f"{argument}:={text!r}: give a list, e.g. {argument}:=\"{example}\"")
    words = [str(w).strip() for w in words if w is not None and str(w).strip()]
    if not words:
        raise ValueError(f"{argument}:={text!r} holds no word")
    return words


def flag(name: str, text: str) -> bool:
    """A boolean launch argument (true/false, 1/0, yes/no, on/off, any case)."""
    value = text.strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"{name}:={text!r}: give true or false")
    return value in TRUE_WORDS


def camera_info_of(image_topic: str) -> str:
    """The camera_info topic beside an image topic (image_transport's convention)."""
    parent, sep, _ = image_topic.rstrip("/").rpartition("/")
    return f"{parent}{sep}camera_info"  # "image" -> "camera_info", "/image" -> "/camera_info"


def camera_names(text: str) -> list[str]:
    """The `cameras` launch argument -> names ("[head, wrist]" or "head, wrist"), checked
    as the node checks its `cameras` parameter."""
    from ..cameras import cameras_problem  # stdlib only: no ROS import here either

    names = text_list("cameras", text, "[head, wrist]")
    problem = cameras_problem(names)
    if problem:
        raise ValueError(f"cameras:={text!r} {problem}")
    return names


def node_arguments(args: Mapping[str, str]) -> tuple[dict[str, object], list[tuple[str, str]]]:
    """(parameter overrides, remappings) of the node, from the launch arguments' values
    (`NODE_ARGUMENTS`, as text). An empty weights, device, vocabulary or cameras leaves the
    params file's value; a depth topic turns on `use_depth`; ValueError names a malformed
    argument. With named cameras the topics go through `camera_remappings`."""
    overrides: dict[str, object] = {}
    for key in ("weights", "device"):
        if args[key]:
            overrides[key] = args[key]
    if args["vocabulary"].strip():
        overrides["vocabulary"] = vocabulary_words(args["vocabulary"])
    overrides["autostart"] = flag("autostart", args["autostart"])
    if args["cameras"].strip():
        overrides["cameras"] = camera_names(args["cameras"])
        remappings = camera_remappings(overrides["cameras"], args)
        if any(name.endswith("/depth") for name, _ in remappings):
            overrides["use_depth"] = True
        return overrides, remappings
    for key in ("image_topic", "camera_info_topic", "depth_topic"):
        if CAMERA_FIELD in args[key]:
            raise ValueError(f"{key}:={args[key]!r} holds {CAMERA_FIELD} but the launch names "
                             "no cameras: give cameras:=\"[head, wrist]\" too (cameras named "
                             "only in the params file read <camera>/image etc. in the node's "
                             "namespace; remap those with -r, docs/ros.md)")
    image = args["image_topic"]
    remappings = [("image", image),
                  ("camera_info", args["camera_info_topic"] or camera_info_of(image))]
    if args["depth_topic"]:
        overrides["use_depth"] = True
        remappings.append(("depth", args["depth_topic"]))
    return overrides, remappings


def camera_remappings(cameras: list[str], args: Mapping[str, str]) -> list[tuple[str, str]]:
    """Each named camera's remappings: `image_topic`, `camera_info_topic` and `depth_topic`
    with "{camera}" in them are each camera's topic ("/{camera}/color/image_raw"); left at
    their defaults, nothing is remapped (camera head reads head/image, head/camera_info,
    head/depth in the node's namespace). The camera info defaults to the sibling of each
    camera's image. One topic without "{camera}" is that camera's when one camera is named,
    and a ValueError for several."""
    image, info, depth = (args[k].strip() for k in ("image_topic", "camera_info_topic",
                                                    "depth_topic"))
    for key, value, default in (("image_topic", image, DEFAULT_IMAGE_TOPIC),
                                ("camera_info_topic", info, ""), ("depth_topic", depth, "")):
        if len(cameras) > 1 and value != default and CAMERA_FIELD not in value:
            raise ValueError(f"{key}:={value!r} names one topic for the cameras "
                             f"{', '.join(cameras)}: put {CAMERA_FIELD} where each camera's "
                             f"name goes, e.g. /{CAMERA_FIELD}/color/image_raw")
    remappings = []
    for camera in cameras:
        own = {}
        if CAMERA_FIELD in image or (len(cameras) == 1 and image != DEFAULT_IMAGE_TOPIC):
            own["image"] = image.replace(CAMERA_FIELD, camera)
            own["camera_info"] = camera_info_of(own["image"])
        if info:
            own["camera_info"] = info.replace(CAMERA_FIELD, camera)
        if depth:
            own["depth"] = depth.replace(CAMERA_FIELD, camera)
        remappings += [(f"{camera}/{name}", topic) for name, topic in own.items()]
    return remappings


def teach_ui_camera_name(overrides: Mapping[str, object], chosen: str = "") -> str:
    """The camera the teach page shows and teaches from: `chosen` (launch argument
    teach_ui_camera), else the first of `cameras:=` ("" for a node of one unnamed camera).
    With the cameras in a params file the launch cannot see them: `chosen` names one there.
    ValueError for a chosen name that is not a camera name, or not one of `cameras:=`."""
    from ..cameras import cameras_problem  # stdlib only: no ROS import here either

    cameras = overrides.get("cameras") or [""]
    chosen = chosen.strip()
    if not chosen:
        return cameras[0]
    if cameras_problem([chosen]) is not None:
        raise ValueError(f"teach_ui_camera:={chosen!r}: not a camera name (letters, digits, "
                         "underscores, starting with a letter)")
    if cameras != [""] and chosen not in cameras:
        raise ValueError(f"teach_ui_camera:={chosen!r} is not one of cameras:= "
                         f"{', '.join(cameras)}")
    return chosen


def teach_ui_camera(overrides: Mapping[str, object], remappings: list[tuple[str, str]],
                    chosen: str = "") -> str:
    """The image topic the teach page shows: its camera's (`teach_ui_camera_name`), as the
    node's remappings name it."""
    camera = teach_ui_camera_name(overrides, chosen)
    name = f"{camera}/image" if camera else "image"
    return dict(remappings).get(name, name)


def teach_ui_arguments(args: Mapping[str, str],
                       overrides: Mapping[str, object] | None = None) -> dict[str, object] | None:
    """The teach UI node's parameters from the launch arguments (`TEACH_UI_ARGUMENTS`, as
    text) and the node's `overrides` (`node_arguments`), or None when `teach_ui` is false. An
    empty host is 127.0.0.1 (any other host makes the page ask for the token); an empty token
    is generated by the UI at start; the camera is `teach_ui_camera_name`'s. ValueError names a
    malformed argument, so the launch fails before any process starts."""
    if not flag("teach_ui", args["teach_ui"]):
        return None
    from .ui.guard import check_token_text  # stdlib only: no ROS import here either

    host = args["teach_ui_host"].strip() or "127.0.0.1"
    text = args["teach_ui_port"].strip()
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"teach_ui_port:={text!r}: give a port number, 0..65535 (0: any free)")
    token = args["teach_ui_token"].strip()
    if token:
        try:
            check_token_text(token)
        except ValueError as exc:
            raise ValueError(f"teach_ui_token: {exc}") from None
    camera = teach_ui_camera_name(overrides or {}, args.get("teach_ui_camera", ""))
    return {"host": host, "port": int(text), "token": token, "camera": camera}


def log_environment(stdout_is_terminal: bool) -> dict[str, str]:
    """The node's logging environment: coloured lines for a terminal, plain text when the
    launch's output is redirected to a file (no ANSI escape codes in logs). The node keeps a
    pseudo-terminal (`emulate_tty`) either way, so its lines are not held in a buffer."""
    return {"RCUTILS_COLORIZED_OUTPUT": "1" if stdout_is_terminal else "0"}

