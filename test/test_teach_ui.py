"""The teach page in a real browser against the real node: headless Chromium (Debian's
package, driven by Selenium through chromedriver), the teach UI, the povss node with the
committed small SAN and a synthetic camera are separate processes over real DDS on loopback.

A person's flow on a phone-size screen: freeze a frame, drag a box around my mug, name it,
teach, see the answer, the review and the concept's mask arrive; correct it by tapping the
other mug ("not this one"); forget it; edit the vocabulary; the page says when the node goes
away and when it is back. Refused: a box outside the frame, a cross-site request, a request
without the token on a non-loopback bind. The rules the page's checks share with the node's
are compared directly.

TEACH_UI_SCREENSHOT=docs/teach_ui.png saves the page after the teach (the README's picture).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built (make setup)")
pytest.importorskip("starlette", reason="starlette not installed (make setup installs it)")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (make setup)")

from _ros_client import ROOT, ros_env, stop  # noqa: E402
from _waiting import wait_until  # noqa: E402
from conftest import in_ci  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

from povss_lab.spawn import node_command, write_params  # noqa: E402
from povss_ros.ros.ui.forms import FormError, check_mark  # noqa: E402
from povss_ros.ros.ui.guard import TOKEN_HEADER, Guard, is_loopback  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NS = "/tu"
MODEL = ROOT / "models" / "syn_small.safetensors"
WORDS = ["wall", "floor", "table", "mug", "bottle", "ball", "box", "book", "can", "plate",
         "bowl", "phone", "banana", "apple", "scissors", "spoon", "vase"]
PHONE = (412, 915)  # CSS pixels of a common phone's screen
TEACH_S = 300.0  # a teach on a shared 2-core CPU, with room


# ------------------------------------------------------------------ processes
def browser_binaries() -> tuple[str, str]:
    """Debian's chromium and chromedriver; missing: a skip, or a failure in CI."""
    found = (shutil.which("chromium") or shutil.which("chromium-browser"),
             shutil.which("chromedriver"))
    if None in found:
        why = "chromium and chromium-driver are not installed (`make browser` installs them)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    return found


class Process:
    """A child process whose output lines are collected as they come (for its address)."""

    def __init__(self, cmd: list[str], env: dict) -> None:
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)[-4000:]

    def end(self) -> int:
        """SIGINT, as ros2 launch sends; the exit status."""
        stop(self.proc)
        self._reader.join(timeout=10)
        return self.proc.returncode


def start_node(tmp: Path, env: dict) -> Process:
    params = write_params(tmp / "params.yaml", {
        "weights": f'"{MODEL}"', "device": "cpu", "concept_store": f'"{tmp / "concepts"}"',
        "vocabulary": "[" + ", ".join(f'"{w}"' for w in WORDS) + "]",
        "teach_iterations": "30", "capture_buffer_size": "4"})
    return Process(node_command(params, {"__ns": NS, "image": "/cam/image",
                                         "camera_info": "/cam/camera_info"}), env)


def start_ui(env: dict, **params: str) -> tuple[Process, str]:
    """povss_teach_ui beside the node (its namespace, the camera remapped as the launch file
    does) on a free port; returns it and the address it printed."""
    cmd = [sys.executable, "-m", "povss_ros.ros.ui.main", "--ros-args", "-r", f"__ns:={NS}",
           "-r", "image:=/cam/image", "-p", "port:=0"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    ui = Process(cmd, env)
    wait_until(lambda: "teach page for" in "".join(ui.lines), 60, "the teach UI's address",
               ui.proc)
    line = next(x for x in ui.lines if "teach page for" in x)
    return ui, line.rsplit(": ", 1)[1].strip()


class World:
    """The node, the camera, the teach UI and a phone-size headless browser on its page."""

    def __init__(self, tmp: Path) -> None:
        chromium, chromedriver = browser_binaries()
        self.tmp, self.env = tmp, ros_env()
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p)
        self.truth_path = tmp / "truth.json"
        self.node = start_node(tmp, self.env)
        self.camera = subprocess.Popen(
            [sys.executable, str(ROOT / "test" / "_teach_ui_camera.py"), str(self.truth_path),
             "4"], cwd=ROOT, env=self.env)
        self.ui, self.url = start_ui(self.env)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={PHONE[0]},{PHONE[1]}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver),
                                       options=options)

    def truth(self) -> dict:
        wait_until(self.truth_path.exists, 60, "the camera's truth file", self.camera)
        return json.loads(self.truth_path.read_text())

    def close(self) -> None:
        self.driver.quit()
        ui_status = self.ui.end()
        stop(self.camera)
        node_status = self.node.end()
        assert ui_status == 0, self.ui.log()
        assert "Traceback" not in self.ui.log(), self.ui.log()
        assert node_status == 0, self.node.log()
        assert "Traceback" not in self.node.log(), self.node.log()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("teach_ui"))
    try:
        w.driver.get(w.url)
        status(w, "frames arriving", 120)
        yield w
    finally:
        w.close()


# ------------------------------------------------------------------ the page, as a person uses it
def text(w: World, element_id: str) -> str:
    try:
        return w.driver.find_element(By.ID, element_id).text
    except WebDriverException:
        return ""


def wait_page(w: World, predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    """Wait for a condition on the page; the node's or the UI's early exit fails it at once."""
    def holds() -> bool:
        try:
            return bool(predicate())
        except WebDriverException:  # the page is re-rendering the element: ask again
            return False
    try:
        wait_until(holds, timeout, what, w.ui.proc)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\npage message: {text(w, 'message')!r}; status: "
                             f"{text(w, 'status')!r}\nUI log:\n{w.ui.log()}") from None


def status(w: World, words: str, timeout: float) -> None:
    wait_page(w, lambda: words in text(w, "status"), timeout, f"the status to say {words!r}")


def click(w: World, element_id: str) -> None:
    element = w.driver.find_element(By.ID, element_id)
    w.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def freeze(w: World) -> tuple[int, int]:
    """Freeze a frame; the frame's size once its picture is on the page."""
    click(w, "freeze")
    frozen = w.driver.find_element(By.ID, "frozen")

    def shown() -> bool:
        if frozen.is_displayed() and w.driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", frozen):
            return True
        if "no frame to freeze yet" in text(w, "message"):  # as a person would: click again
            click(w, "freeze")  # (a page just opened may not hold an overlay's frame yet)
        return False

    wait_page(w, shown, 60, "the frozen frame's picture")
    stamp = text(w, "frame-stamp")  # "(stamp 1012.000000000 s, 320x240)"
    width, height = stamp.rsplit(", ", 1)[1].rstrip(")").split("x")
    return int(width), int(height)


def mark(w: World, size: tuple[int, int], start: list[float], end: list[float] | None) -> None:
    """Drag from `start` to `end` (pixels of the frame), or tap `start` when `end` is None."""
    frozen = w.driver.find_element(By.ID, "frozen")
    w.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", frozen)
    rect = frozen.rect

    def offset(x: float, y: float) -> tuple[int, int]:  # from the picture's centre, CSS px
        return (round(x / size[0] * rect["width"] - rect["width"] / 2),
                round(y / size[1] * rect["height"] - rect["height"] / 2))

    actions = ActionChains(w.driver).move_to_element_with_offset(frozen, *offset(*start))
    if end is None:
        actions.click()
    else:
        actions.click_and_hold().move_to_element_with_offset(frozen, *offset(*end)).release()
    actions.perform()


def concept_row(w: World, concept_id: str):  # noqa: ANN201 - a WebElement or None
    rows = w.driver.find_elements(By.CSS_SELECTOR, f'tr[data-concept-id="{concept_id}"]')
    return rows[0] if rows else None


def mask_pixels(w: World, concept_id: str) -> int:
    row = concept_row(w, concept_id)
    cell = row.find_element(By.CLASS_NAME, "mask").text if row is not None else ""
    return int(cell.split()[0]) if cell.split() and cell.split()[0].isdigit() else 0


def mask_state(w: World, concept_id: str) -> tuple[float, int]:
    """(stamp in seconds, pixels) of the concept's newest mask the page serves; (0, 0) before
    any."""
    with urllib.request.urlopen(f"{w.url}api/state", timeout=30) as response:
        state = json.loads(response.read())
    mask = next((c.get("mask") for c in state["concepts"] if c["concept_id"] == concept_id),
                None)
    return (float(mask["stamp"]), int(mask["pixels"])) if mask else (0.0, 0)


def answer_done(w: World) -> bool:
    answer = w.driver.find_element(By.ID, "answer")
    return answer.is_displayed() and answer.get_attribute("data-success") in ("yes", "no") and \
        not w.driver.find_element(By.ID, "teach").get_attribute("disabled")


def mask_on(w: World, concept_id: str, box: list[float]) -> float:
    """The share of the concept's newest mask (as the page serves it) inside `box`."""
    import cv2
    import numpy as np

    with urllib.request.urlopen(f"{w.url}api/mask/{concept_id}.jpg", timeout=30) as response:
        mask = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_GRAYSCALE) > 127
    x0, y0, x1, y1 = (round(v) for v in box)
    return float(mask[y0:y1, x0:x1].sum() / max(mask.sum(), 1))


def post(url: str, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """A request as a browser (or another site) would send it; (status, JSON answer)."""
    request = urllib.request.Request(url.split("?")[0].rstrip("/") + path, data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ------------------------------------------------------------------ tests
def test_the_page_shows_the_node_its_vocabulary_and_fits_a_phone(world):
    assert "connected to /tu/povss" in text(world, "status")
    options = [o.get_attribute("value") for o in
               Select(world.driver.find_element(By.ID, "base")).options]
    assert options == WORDS
    live = world.driver.find_element(By.ID, "live")
    wait_page(world, lambda: world.driver.execute_script(
        "return arguments[0].naturalWidth", live) == 320, 30, "the live overlay")
    overflow = world.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone's screen"


def test_a_box_outside_the_frame_is_refused_with_a_clear_message(world):
    size = freeze(world)
    mine = world.truth()["mine"]["box"]
    mark(world, size, mine[:2], [mine[2], size[1] + 40])  # dragged below the picture
    assert "box" in text(world, "mark-text")
    world.driver.find_element(By.ID, "name").clear()
    world.driver.find_element(By.ID, "name").send_keys("my mug")
    Select(world.driver.find_element(By.ID, "base")).select_by_visible_text("mug")
    click(world, "teach")
    wait_page(world, lambda: "outside the 320x240 frame" in text(world, "message"), 30,
              "the refusal of a box outside the frame")
    assert "error" in world.driver.find_element(By.ID, "message").get_attribute("class")
    assert world.driver.find_element(By.ID, "answer-section").get_attribute("hidden")


def test_teach_from_a_box_then_the_mask_arrives_then_not_this_one(world):
    truth = world.truth()
    size = freeze(world)
    mark(world, size, truth["mine"]["box"][:2], truth["mine"]["box"][2:])
    assert "box" in text(world, "mark-text")
    name = world.driver.find_element(By.ID, "name")
    name.clear()
    name.send_keys("my mug")
    Select(world.driver.find_element(By.ID, "base")).select_by_visible_text("mug")
    click(world, "teach")
    wait_page(world, lambda: answer_done(world), TEACH_S, "the teach's answer")
    answer = text(world, "answer")
    assert "taught 'my mug' as concept my_mug" in answer and "1 shot(s)" in answer, answer
    assert "error" not in world.driver.find_element(By.ID, "message").get_attribute("class")
    review = world.driver.find_element(By.ID, "review")
    wait_page(world, lambda: world.driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", review), 30,
        "the teach review's picture")
    wait_page(world, lambda: concept_row(world, "my_mug") is not None, 30, "my mug's row")
    wait_page(world, lambda: mask_pixels(world, "my_mug") > 0, 120, "my mug's mask")
    assert mask_on(world, "my_mug", truth["mine"]["box"]) > 0.8  # on my mug, not the other
    row_cells = concept_row(world, "my_mug").find_elements(By.TAG_NAME, "td")
    assert [c.text for c in row_cells[:3]] == ["my mug", "mug", "1"]
    if os.environ.get("TEACH_UI_SCREENSHOT"):
        world.driver.set_window_size(1100, 1250)
        world.driver.execute_script("window.scrollTo(0, 0)")
        world.driver.save_screenshot(os.environ["TEACH_UI_SCREENSHOT"])
        world.driver.set_window_size(*PHONE)

    # "Not this one": pick the concept, freeze, tap the other mug, correct.
    concept_row(world, "my_mug").find_element(By.CLASS_NAME, "select").click()
    assert world.driver.find_element(By.ID, "name").get_attribute("value") == "my mug"
    size = freeze(world)
    mark(world, size, truth["other"]["point"], None)
    assert "point" in text(world, "mark-text")
    click(world, "not-this")
    wait_page(world, lambda: answer_done(world), TEACH_S, "the correction's answer")
    answer = text(world, "answer")
    assert "taught 'my mug' as concept my_mug" in answer, answer
    assert "1 look-alike(s)" in answer, answer
    # the corrected concept's own masks: frames after its answer (the concept was swapped in
    # before it; its presence starts afresh, so its first frame may hold no region yet)
    answered = mask_state(world, "my_mug")[0]

    def corrected_mask() -> bool:
        stamp, pixels = mask_state(world, "my_mug")
        return stamp > answered and pixels > 0

    wait_page(world, corrected_mask, 120, "my mug's mask after the correction")
    assert mask_on(world, "my_mug", truth["mine"]["box"]) > 0.8


def test_cross_site_requests_are_refused(world):
    token = world.driver.find_element(By.CSS_SELECTOR, 'meta[name="povss-token"]') \
        .get_attribute("content")
    json_type = {"Content-Type": "application/json"}
    # Another site's script, even holding the token, is refused by its Origin.
    code, answer = post(world.url, "/api/forget", b'{"name": "my mug"}', {
        **json_type, TOKEN_HEADER: token, "Origin": "http://evil.example"})
    assert code == 403 and "cross-site" in answer["error"]
    # No token: refused.
    code, answer = post(world.url, "/api/forget", b'{"name": "my mug"}', json_type)
    assert code == 403 and "no valid token" in answer["error"]
    # A real cross-site form in the browser (a page of another origin posting to the UI).
    form = ("<form method=post enctype=text/plain action='" + world.url.rstrip("/") +
            "/api/forget'><input name='{\"name\": \"my mug\", \"x\": \"' value='\"}'></form>"
            "<script>document.forms[0].submit()</script>")
    world.driver.get("data:text/html," + form)
    wait_page(world, lambda: "refused" in world.driver.page_source, 30, "the refusal")
    assert "refused: no valid token" in world.driver.page_source
    world.driver.get(world.url)
    status(world, "frames arriving", 60)
    wait_page(world, lambda: concept_row(world, "my_mug") is not None, 30,
              "my mug, still taught")


def test_forget_from_the_page(world):
    wait_page(world, lambda: concept_row(world, "my_mug") is not None, 30, "my mug's row")
    button = concept_row(world, "my_mug").find_element(By.CLASS_NAME, "forget")
    button.click()
    assert button.text == "Really forget?"  # a stray tap forgets nothing
    button.click()
    wait_page(world, lambda: concept_row(world, "my_mug") is None, 30, "my mug gone")
    assert text(world, "message").startswith("forgot 'my mug' (id my_mug)")
    assert world.driver.find_element(By.ID, "no-concepts").is_displayed()


def test_edit_the_vocabulary_from_the_page(world):
    box = world.driver.find_element(By.ID, "vocabulary")
    box.clear()
    box.send_keys("mug, cup, mug")
    click(world, "set-vocabulary")
    wait_page(world, lambda: "duplicate vocabulary words: ['mug']" in text(world, "message"),
              30, "the duplicate refused")
    box.clear()
    box.send_keys(", ".join([*WORDS, "cup"]))
    click(world, "set-vocabulary")
    base = Select(world.driver.find_element(By.ID, "base"))
    wait_page(world, lambda: "cup" in [o.get_attribute("value") for o in base.options], 120,
              "cup offered")
    assert text(world, "message") == "vocabulary set"


def test_the_page_says_when_the_node_goes_away_and_comes_back(world):
    assert world.node.end() == 0, world.node.log()
    status(world, "is not there; waiting for it to come back", 60)
    world.node = start_node(world.tmp, world.env)
    status(world, "frames arriving", 180)
    size = freeze(world)  # frames of the new node can be frozen again
    assert size == (320, 240)


def test_a_non_loopback_bind_needs_the_token(world):
    ui, url = start_ui(world.env, host="0.0.0.0", token="a-token-given-at-start")
    try:
        assert url.endswith("/?token=a-token-given-at-start")
        local = url.split("//", 1)[1].split(":", 1)[1]  # PORT/?token=...
        bare = f"http://127.0.0.1:{local.split('/', 1)[0]}/"
        world.driver.get(bare)
        assert "this page needs its token" in world.driver.find_element(By.ID, "refused").text
        code, answer = post(bare, "/api/freeze", b"{}", {"Content-Type": "application/json",
                                                         TOKEN_HEADER: "a-token-given-at-start"})
        assert code == 403 and "no session" in answer["error"]  # the header alone: no
        world.driver.get(bare + "?token=a-token-given-at-start")
        wait_page(world, lambda: "frames arriving" in text(world, "status"), 60,
                  "the page with its token")
        assert "token" not in world.driver.current_url  # the address bar keeps no secret
        size = freeze(world)  # a change, from the page holding its session
        assert size == (320, 240)
    finally:
        world.driver.get(world.url)
        assert ui.end() == 0, ui.log()


def _ui_alone_env() -> dict:
    """The environment of a teach UI started with no node: loopback DDS in its own domain
    (this process's environment is left as it is)."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               ROS_DOMAIN_ID=str(231 + os.getpid() % 2))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _chunk(data: bytes) -> bytes:
    """One chunk of a chunked HTTP/1.1 body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_body_past_the_limit_is_refused_before_it_is_read_whole():
    """A POST body past MAX_BODY is answered 413 as soon as it passes the limit: a chunked
    body with no Content-Length gets its answer while the client has not finished sending
    (the page never waits for, or holds, the rest); a Content-Length past the limit is
    refused before any body. A small chunked body is read whole and reaches the form check."""
    from povss_ros.ros.ui.app import MAX_BODY

    token = "a-token-for-the-body-limit"
    ui, url = start_ui(_ui_alone_env(), token=token)
    port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def accepting() -> bool:  # the address is printed before uvicorn listens on the socket
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return False
        return True

    def send(path: str, head: dict, chunks: list[bytes]) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)  # a bounded wait
        try:
            conn.putrequest("POST", path)
            for key, value in {"Content-Type": "application/json", TOKEN_HEADER: token,
                               **head}.items():
                conn.putheader(key, value)
            conn.endheaders()
            for chunk in chunks:
                conn.send(chunk)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    try:
        wait_until(accepting, 30, "the teach UI to accept connections", ui.proc)
        # One byte past the limit and no last chunk: all of it is read by the time the page
        # can know the body is too large, and the answer cannot wait for an end never sent.
        past = b" " * (MAX_BODY + 1)
        unfinished = [_chunk(past[i:i + 8192]) for i in range(0, len(past), 8192)]
        code, answer = send("/api/vocabulary", {"Transfer-Encoding": "chunked"}, unfinished)
        assert code == 413, answer
        assert answer["error"] == f"the request is larger than {MAX_BODY} bytes"
        code, answer = send("/api/forget", {"Content-Length": str(MAX_BODY + 1)}, [])
        assert code == 413, answer
        assert answer["error"] == f"the request is larger than {MAX_BODY} bytes"
        small = [_chunk(b'{"words": '), _chunk(b"5}"), b"0\r\n\r\n"]
        code, answer = send("/api/vocabulary", {"Transfer-Encoding": "chunked"}, small)
        assert code == 400, answer
        assert answer["error"] == "the vocabulary is a list of words, separated by commas"
    finally:
        status_code = ui.end()
    assert status_code == 0, ui.log()
    assert "Traceback" not in ui.log(), ui.log()


# ------------------------------------------------------------------ the rules, without the page
@pytest.mark.parametrize(("kind", "values"), [
    ("box", [10, 10, 100, 100]), ("box", [0, 0, 320, 240]), ("box", [10, 10, 10.5, 50]),
    ("box", [-1, 0, 50, 50]), ("box", [0, 0, 321, 240]), ("box", [5, 5, float("nan"), 9]),
    ("box", [50, 50, 10, 10]), ("point", [0, 0]), ("point", [319.5, 239.5]),
    ("point", [320, 10]), ("point", [-0.5, 3]), ("point", [1, float("inf")]),
])
def test_the_page_refuses_exactly_the_prompts_the_node_refuses(kind, values):
    from povss_ros.teaching.shot_masks import check_prompt

    try:
        check_prompt(kind, values, (240, 320), "frame")
        node_refuses = False
    except ValueError:
        node_refuses = True
    try:
        check_mark(kind, values, 320, 240)
        page_refuses = False
    except FormError:
        page_refuses = True
    assert page_refuses == node_refuses


def test_the_guard_rules():
    local = Guard("127.0.0.1", 8642, "t" * 20)
    ok = {"host": "127.0.0.1:8642", TOKEN_HEADER: "t" * 20, "origin": "http://127.0.0.1:8642",
          "content-type": "application/json"}
    assert local.may_change("POST", ok, {}) == ""
    assert local.may_read({"host": "localhost:8642"}, {}) == ""
    assert "Host header" in local.may_read({"host": "evil.example:8642"}, {})
    assert "cross-site" in local.may_change("POST", {**ok, "origin": "http://x.test"}, {})
    assert "cross-site" in local.may_change("POST", {**ok, "sec-fetch-site": "cross-site"}, {})
    assert "JSON" in local.may_change("POST", {**ok, "content-type": "text/plain"}, {})
    assert "no valid token" in local.may_change("POST", {**ok, TOKEN_HEADER: "x" * 20}, {})
    remote = Guard("0.0.0.0", 8642, "t" * 20)
    assert "needs its token" in remote.may_read({"host": "robot:8642"}, {})
    assert remote.may_read({"host": "robot:8642"}, {"povss_token": "t" * 20}) == ""
    assert remote.address("robot") == f"http://robot:8642/?token={'t' * 20}"
    assert is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")


def test_the_page_of_a_named_camera_watches_and_teaches_that_camera(world):
    """A page given camera head (the launch file gives it a node's first camera) shows
    ~/head/overlay, not the one-camera ~/overlay, and its teach names head. Here a stand-in
    publishes black pictures as head's overlay, with the camera's stamps, so a frozen black
    frame can only come from head's; the node has one unnamed camera, so it refuses a teach
    naming head and says why, and stores nothing."""
    from povss_ros.ros.ui.bridge import camera_outputs

    assert camera_outputs("povss", "head") + "overlay" == "povss/head/overlay"
    assert camera_outputs("povss", "") + "overlay" == "povss/overlay"
    overlay = subprocess.Popen([sys.executable, str(ROOT / "test" / "_black_overlay.py"),
                                "/cam/image", f"{NS}/povss/head/overlay"],
                               cwd=ROOT, env=world.env)
    ui, url = start_ui(world.env, camera="head")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            token = re.search(r'name="povss-token" content="([^"]+)"',
                              response.read().decode())[1]
        headers = {"Content-Type": "application/json", TOKEN_HEADER: token}
        frozen: dict = {}

        def froze() -> bool:
            code, answer = post(url, "/api/freeze", b"{}", headers)
            frozen.update(answer if code == 200 else {})
            return code == 200

        wait_until(froze, 60, "a frame of head's overlay to freeze", ui.proc)
        wait_until(lambda: json.loads(urllib.request.urlopen(f"{url}api/state", timeout=30)
                                      .read())["connected"], 60, "the page to reach the node",
                   ui.proc)  # as the page waits before it lets a person teach
        picture = urllib.request.urlopen(f"{url.split('?')[0]}api/frozen/{frozen['frame']}.jpg",
                                         timeout=30).read()
        import cv2
        import numpy as np

        pixels = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert pixels.shape == (240, 320) and pixels.max() < 16  # head's black, not ~/overlay
        teach = {"name": "my head mug", "base_class": "mug", "frame": frozen["frame"],
                 "mark": {"kind": "box", "values": [100, 80, 200, 160]}}
        code, answer = post(url, "/api/teach", json.dumps(teach).encode(), headers)
        assert code == 200 and answer["success"] is False, answer
        assert "no camera 'head' here" in answer["message"], answer
        assert not list((world.tmp / "concepts").glob("my_head_mug*"))  # nothing stored
    finally:
        stop(overlay)
        ui_status = ui.end()
    assert ui_status == 0 and "Traceback" not in ui.log(), ui.log()
