"""Camera-sized images between processes: the bundled Fast DDS profile and when it applies."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from povss_lab.spawn import private_domain_id
from povss_ros.ros.dds import (
    OPT_OUT,
    PROFILE,
    PROFILE_VARIABLES,
    USER_SETTINGS,
    fast_dds_major,
    use_large_image_transport,
)

ROOT = Path(__file__).resolve().parents[1]


def test_profile_is_valid_xml_with_a_segment_for_full_hd_frames():
    ns = {"d": "http://www.eprosima.com"}
    tree = ET.parse(PROFILE)
    shm = [t for t in tree.iterfind(".//d:transport_descriptor", ns)
           if t.findtext("d:type", namespaces=ns) == "SHM"]  # fmt: skip
    assert len(shm) == 1
    assert int(shm[0].findtext("d:segment_size", namespaces=ns)) >= 1920 * 1080 * 3
    participant = tree.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"


def test_applies_by_default_to_fast_dds_through_its_own_variable(tmp_path):
    """Fast DDS 3 (Kilted) reads FASTDDS_..., Fast DDS 2 (Jazzy) only FASTRTPS_..., and
    Fast DDS 3 warns on every start when FASTRTPS_... is set: only the installed version's."""
    installed = fast_dds_major({})  # this venv's wheels tell which one it is
    assert installed in (2, 3)
    env: dict[str, str] = {}
    assert use_large_image_transport(env, cwd=tmp_path) == str(PROFILE)
    assert env == {PROFILE_VARIABLES[installed]: str(PROFILE)}
    for distro, variable in (("jazzy", "FASTRTPS_DEFAULT_PROFILES_FILE"),
                             ("kilted", "FASTDDS_DEFAULT_PROFILES_FILE")):
        env = {"ROS_DISTRO": distro}
        assert use_large_image_transport(env, cwd=tmp_path) == str(PROFILE)
        assert env == {"ROS_DISTRO": distro, variable: str(PROFILE)}
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}
    assert use_large_image_transport(env, cwd=tmp_path) == str(PROFILE)


def test_the_node_starts_without_fast_dds_deprecation_warnings():
    """No process of ours prints Fast DDS 3's warning about the old variable's name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTDDS_", "FASTRTPS_"))}
    code = ("from povss_ros.ros.dds import use_large_image_transport\n"
            "use_large_image_transport()\nimport rclpy\nrclpy.init()\n"
            "rclpy.create_node('quiet').destroy_node()\nrclpy.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "deprecated" not in out.stderr + out.stdout, out.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
        {"RMW_IMPLEMENTATION": "rmw_zenoh_cpp"},
        {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"},
        {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"},
        {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
        {OPT_OUT: "0"},
    ],
)
def test_leaves_a_user_choice_alone(env, tmp_path):
    before = dict(env)
    assert use_large_image_transport(env, cwd=tmp_path) is None
    assert env == before


def test_leaves_a_working_directory_profile_alone(tmp_path):
    (tmp_path / "DEFAULT_FASTDDS_PROFILES.xml").write_text("<dds/>")
    env: dict[str, str] = {}
    assert use_large_image_transport(env, cwd=tmp_path) is None and env == {}


@pytest.mark.ros
def test_640x480_best_effort_frames_cross_processes():
    """A 900 KiB rgb8 frame exceeds Fast DDS's default 512 KiB shared-memory segment; with the
    profile (applied by both scripts, as by the node) the frames cross whole."""
    env = dict(
        os.environ,
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(private_domain_id()),
        PYTHONUNBUFFERED="1",
    )
    for key in (*USER_SETTINGS, OPT_OUT):
        env.pop(key, None)
    topic = "/transport_test/image"
    counter = subprocess.Popen(
        [sys.executable, str(ROOT / "test" / "_image_counter.py"), topic, "14"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert counter.stdout.readline().strip() == "ready"
        sent = subprocess.run(
            [sys.executable, str(ROOT / "test" / "_image_publisher.py"), topic, "10", "3",
             "camera_optical", "640x480"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        n_sent = int(sent.stdout.strip().splitlines()[-1].split()[1])
        out, _ = counter.communicate(timeout=60)
    finally:
        counter.kill()
    received = int(out.strip().splitlines()[-1].split()[1])
    assert n_sent >= 20
    assert received >= 0.9 * n_sent, f"{received} of {n_sent} frames arrived"
