"""captcha_label.py: the folder's answers on disk, the HTTP API, a real retraining, the command line's
one-line errors, and a person's view: the page in headless chromium, driven by the keyboard alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cdp_browser import Browser
from fastapi.testclient import TestClient
from PIL import Image
from script_runner import start_listening

import captcha_gen
import captcha_label
from captchakit.data.folders import folder_labels
from captchakit.data.images import label_from_name
from captchakit.label.app import create_app
from captchakit.label.reading import LABEL_MODEL, Reader, choose_model
from captchakit.label.retrain import MIN_LABELS, Retrainer
from captchakit.label.store import LabelStore, Reading, check_label
from captchakit.shipped import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "captcha_train.py")]
HEADER = "filename,label"


@pytest.fixture(scope="module")
def captchas(tmp_path_factory) -> list[Path]:
    """16 default-style captchas named LABEL_ID.png (seed 11): what the shipped model reads."""
    out = tmp_path_factory.mktemp("captchas")
    captcha_gen.main(["--train", "16", "--test", "0", "--predict", "0", "--out", str(out), "--seed", "11", "--workers", "1"])
    return sorted((out / "train").glob("*.png"))


def opaque(captchas: list[Path], folder: Path, count: int | None = None) -> dict[str, str]:
    """Copy captchas into `folder` under names that carry no label (0000.png, ...); file name -> true label."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, path in enumerate(captchas[:count]):
        shutil.copy(path, folder / f"{i:04d}.png")
        truth[f"{i:04d}.png"] = label_from_name(path.name)
    return truth


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- the store: what is on disk --------------------------------------------------------------


def test_answers_are_saved_at_once_and_a_restart_goes_on_where_it_stopped(captchas, tmp_path, capsys):
    truth = opaque(captchas, tmp_path / "imgs", 6)
    store = LabelStore(tmp_path / "imgs")
    assert store.todo() == list(truth) and not (tmp_path / "imgs" / "labels.csv").exists()
    store.answer("0003.png", truth["0003.png"])
    assert lines(store.labels_path) == [HEADER, f"0003.png,{truth['0003.png']}"]  # on disk before answer() returns
    store.answer("0001.png", " ab12 ")  # stripped; a second answer replaces the first
    store.answer("0001.png", truth["0001.png"])
    store.mark_unreadable("0005.png")
    assert lines(store.unreadable_path)[1:] == ["0005.png"] and lines(store.unreadable_path)[0].startswith("#")

    again = LabelStore(tmp_path / "imgs")  # a restart
    assert again.labels == {n: truth[n] for n in ("0001.png", "0003.png")}
    assert again.todo() == ["0000.png", "0002.png", "0004.png"] and again.queue == again.todo()
    assert again.counts() == {"images": 6, "labelled": 2, "unreadable": 1, "remaining": 3}
    # Training reads the file as it reads any labels file: the two labels, the unreadable image not among them.
    assert folder_labels(tmp_path / "imgs", store.labels_path) == again.labels
    assert capsys.readouterr().out == ""  # nothing ignored, nothing to say


def test_unreadable_images_are_never_shown_again_nor_trained_on(captchas, tmp_path):
    truth = opaque(captchas, tmp_path / "imgs", 4)
    store = LabelStore(tmp_path / "imgs")
    store.answer("0000.png", truth["0000.png"])
    store.mark_unreadable("0000.png")  # changed its mind: out of labels.csv too
    store.mark_unreadable("0002.png")
    assert not store.labels_path.exists()  # no label left: an empty labels file would be an error to training
    assert "0000.png" not in store.queue and "0002.png" not in store.queue
    again = LabelStore(tmp_path / "imgs")
    assert again.todo() == ["0001.png", "0003.png"] and again.unreadable == {"0000.png", "0002.png"}
    again.answer("0002.png", truth["0002.png"])  # readable after all
    third = LabelStore(tmp_path / "imgs")
    assert third.unreadable == {"0000.png"} and third.labels == {"0002.png": truth["0002.png"]}
    assert lines(third.unreadable_path)[1:] == ["0000.png"]


def test_a_failed_write_leaves_the_old_file_whole_and_the_answer_unsaved(captchas, tmp_path, monkeypatch):
    truth = opaque(captchas, tmp_path / "imgs", 3)
    store = LabelStore(tmp_path / "imgs")
    store.answer("0000.png", truth["0000.png"])
    before = store.labels_path.read_bytes()

    def half_then_full(path, labels):
        Path(path).write_text(HEADER + "\n0001.p")  # cut off mid-line, as a full disk would
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("captchakit.label.store.write_labels_file", half_then_full)
    with pytest.raises(OSError):
        store.answer("0001.png", truth["0001.png"])
    assert store.labels_path.read_bytes() == before
    assert [p.name for p in store.folder.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    assert "0001.png" not in store.labels and "0001.png" in store.queue  # still to answer
    # A temporary that a killed run left is removed by the next start.
    (store.folder / ".labels.csv.part-x1.csv").write_text("half")
    LabelStore(tmp_path / "imgs")
    assert not (store.folder / ".labels.csv.part-x1.csv").exists()


def test_least_confident_first_and_a_skipped_image_comes_back_last(captchas, tmp_path):
    opaque(captchas, tmp_path / "imgs", 5)
    store = LabelStore(tmp_path / "imgs")
    assert store.queue == ["0000.png", "0001.png", "0002.png", "0003.png", "0004.png"]  # no model: name order
    readings = {"0000.png": Reading("AAAA", 0.9), "0001.png": Reading("BBBB", 0.2), "0003.png": Reading("DDDD", 0.5)}
    readings["0004.png"] = Reading("EEEE", 0.99)
    store.use("m", readings, None)  # 0002.png: no reading (unreadable file): first
    assert store.queue == ["0002.png", "0001.png", "0003.png", "0000.png", "0004.png"]
    store.skip("0002.png")
    store.skip("0001.png")
    assert store.queue == ["0003.png", "0000.png", "0004.png", "0002.png", "0001.png"]
    store.use("m2", {**readings, "0000.png": Reading("AAAA", 0.1)}, None)  # retrained: sorted again, skipped ones still last
    assert store.queue == ["0000.png", "0003.png", "0004.png", "0002.png", "0001.png"] and store.version == 2
    assert [item["name"] for item in store.upcoming(2)] == ["0000.png", "0003.png"]
    assert store.upcoming(1)[0] == {"name": "0000.png", "reading": "AAAA", "confidence": 0.1}
    with pytest.raises(KeyError):
        store.skip("../labels.csv")


def test_readings_are_hidden_when_the_labels_do_not_fit_the_model(captchas, tmp_path):
    opaque(captchas, tmp_path / "imgs", 5)
    store = LabelStore(tmp_path / "imgs")
    store.use("m", {n: Reading("AB12", 0.5) for n in store.names}, lambda t: None if len(t) == 4 else f"label {t!r}: not 4")
    store.answer("0000.png", "AB12")
    assert store.misfit() is None and store.upcoming(1)[0]["reading"] == "AB12"
    store.answer("0001.png", "abc123")
    store.answer("0002.png", "xyz789")  # most labels are 6 characters: a 4-character model only gets in the way
    assert "2 of 3 labels do not fit the model (label 'abc123': not 4)" in store.misfit()
    assert store.upcoming(1)[0] == {"name": "0003.png", "reading": "", "confidence": None}


def test_an_existing_labels_file_is_read_and_what_it_says_is_kept(captchas, tmp_path):
    truth = opaque(captchas, tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "labels.csv").write_text(
        f"file\tlabel\nsub/0001.png\t{truth['0001.png']}\n0002\t{truth['0002.png']}\nghost.png\tGH05\n0003.png\t\n"
    )
    store = LabelStore(tmp_path / "imgs")
    assert store.labels == {"0001.png": truth["0001.png"], "0002.png": truth["0002.png"]}
    assert store.todo() == ["0000.png", "0003.png", "0004.png"]  # an empty label is no answer
    store.answer("0004.png", truth["0004.png"])
    written = lines(store.labels_path)
    assert written[0] == HEADER and "ghost.png,GH05" in written and "0003.png," in written and len(written) == 6
    assert LabelStore(tmp_path / "imgs").labels == {n: truth[n] for n in ("0001.png", "0002.png", "0004.png")}


@pytest.mark.parametrize("text", ["", "   ", "A B", "AB\x0012", "X" * 65])
def test_a_label_that_cannot_be_one_is_refused(text):
    with pytest.raises(ValueError):
        check_label(text)


def test_the_model_chosen_by_default_is_the_folders_own_retrained_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert choose_model(None, tmp_path) == DEFAULT_MODEL  # no model.pkl here: the shipped one
    assert choose_model("none", tmp_path) is None
    (tmp_path / "model.pkl").write_bytes(b"x")
    assert choose_model(None, tmp_path) == Path("model.pkl")
    (tmp_path / LABEL_MODEL).write_bytes(b"x")
    assert choose_model(None, tmp_path) == tmp_path / LABEL_MODEL


# --- the HTTP API -------------------------------------------------------------------------------


def api(folder: Path, command=TRAIN, epochs: int | None = 1, model=None) -> TestClient:
    store = LabelStore(folder)
    Reader(model).apply(store)
    return TestClient(create_app(store, Retrainer(store, command, "cpu", epochs, model)))


def post(client: TestClient, path: str, body: dict | None = None):
    return client.post(path, json=body or {})


def test_the_api_saves_answers_and_refuses_what_it_cannot_take(captchas, tmp_path):
    truth = opaque(captchas, tmp_path / "imgs", 4)
    with api(tmp_path / "imgs") as client:
        page = client.get("/")
        assert page.status_code == 200 and "Label captchas" in page.text and "default-src 'self'" in page.headers["content-security-policy"]
        state = client.get("/api/state").json()
        assert state["counts"] == {"images": 4, "labelled": 0, "unreadable": 0, "remaining": 4}
        assert state["model"] == "no model: type every label"
        assert state["queue"][0] == {"name": "0000.png", "reading": "", "confidence": None}
        image = client.get("/image/0000.png")
        assert image.status_code == 200 and image.content == (tmp_path / "imgs" / "0000.png").read_bytes()
        state = post(client, "/api/answer", {"name": "0000.png", "label": truth["0000.png"]}).json()
        assert state["counts"]["labelled"] == 1 and state["queue"][0]["name"] == "0001.png"
        assert lines(tmp_path / "imgs" / "labels.csv") == [HEADER, f"0000.png,{truth['0000.png']}"]
        state = post(client, "/api/skip", {"name": "0001.png"}).json()
        assert [item["name"] for item in state["queue"]] == ["0002.png", "0003.png", "0001.png"]
        state = post(client, "/api/unreadable", {"name": "0002.png"}).json()
        assert state["counts"] == {"images": 4, "labelled": 1, "unreadable": 1, "remaining": 2}
        refusals = [
            (post(client, "/api/answer", {"name": "0003.png", "label": "A B"}), 400, "no spaces"),
            (post(client, "/api/answer", {"name": "../labels.csv", "label": "AB12"}), 404, "no such image"),
            (client.get("/image/labels.csv"), 404, "no such image"),
            (client.get("/image/..%2F..%2Fetc%2Fpasswd"), 404, ""),
            (client.post("/api/answer", data={"name": "0003.png", "label": "AB12"}), 415, "send JSON"),
            (client.post("/api/retrain", content=b"{}", headers={"content-type": "text/plain"}), 415, "send JSON"),
            (post(client, "/api/answer", {"label": "AB12"}), 422, "name"),
            (post(client, "/api/retrain"), 400, f"label at least {MIN_LABELS}"),
        ]
        for response, status, words in refusals:
            assert response.status_code == status and words in response.json()["error"], (status, response.text)
    assert LabelStore(tmp_path / "imgs").labels == {"0000.png": truth["0000.png"]}  # nothing refused reached the disk


def wait_for_training(client: TestClient, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/api/state").json()
        if state["training"]["state"] not in ("training", "reading"):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"still training after {timeout} s: {state['training']}")


@pytest.mark.slow
def test_retraining_runs_captcha_train_then_reads_and_sorts_the_rest_again(captchas, tmp_path):
    truth = opaque(captchas, tmp_path / "imgs")
    with api(tmp_path / "imgs") as client:  # no model to start with: every image unread, in name order
        for name in list(truth)[: MIN_LABELS + 2]:
            post(client, "/api/answer", {"name": name, "label": truth[name]})
        started = post(client, "/api/retrain")
        assert started.status_code == 200 and started.json()["training"]["state"] == "training"
        assert post(client, "/api/retrain").status_code == 409  # one at a time
        state = wait_for_training(client)
    assert state["training"]["state"] == "done", state["training"]
    assert state["model"].startswith(LABEL_MODEL) and state["version"] == 2 and (tmp_path / "imgs" / LABEL_MODEL).is_file()
    confidences = [item["confidence"] for item in state["queue"]]
    assert len(confidences) == len(truth) - MIN_LABELS - 2 and None not in confidences and confidences == sorted(confidences)


def test_a_failed_retraining_says_why_on_the_page(captchas, tmp_path):
    truth = opaque(captchas, tmp_path / "imgs", MIN_LABELS)
    script = "import sys; print('epoch 1/4: 50%|'); print('captcha_train.py: error: --labels x: broken'); sys.exit(2)"
    failing = [sys.executable, "-c", script]
    with api(tmp_path / "imgs", failing) as client:
        for name, label in truth.items():
            post(client, "/api/answer", {"name": name, "label": label})
        post(client, "/api/retrain")
        state = wait_for_training(client, 60)
    assert state["training"]["state"] == "failed" and state["training"]["message"].endswith("--labels x: broken")
    assert state["model"] == "no model: type every label" and state["version"] == 1


# --- the command line -----------------------------------------------------------------------------


def test_command_line_mistakes_are_one_line(cli, captchas, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    opaque(captchas, tmp_path / "imgs", 2)
    (tmp_path / "other").mkdir()
    shutil.copy(captchas[0], tmp_path / "other" / "0000.png")
    (tmp_path / "other" / "labels.csv").write_text("filename,label\nelsewhere.png,AB12\n")
    cases = [
        ((tmp_path / "missing",), "folder not found"),
        ((tmp_path / "empty",), "no images (png, jpg, gif, bmp or webp) in it"),
        ((tmp_path / "empty" / "notes.txt",), "not a folder"),
        ((tmp_path / "other",), "none of its 1 file names is an image in"),
        ((tmp_path / "imgs", "--port", "70000"), "--port 70000: not a TCP port"),
        ((tmp_path / "imgs", "--model", tmp_path / "nope.pkl", "--port", "0"), "nope.pkl: file not found"),
        ((tmp_path / "imgs", "--epochs", "0"), "argument --epochs"),
    ]
    for args, words in cases:
        code, out, err = cli(captcha_label.main, *args)
        assert code == 2 and out == "" and err.count("\n") == 1 and words in err, (args, err)


# --- a person's view: the page in headless chromium, the keyboard only ---------------------------


def start_labeller(*args) -> tuple[subprocess.Popen, str]:
    """Run captcha_label.py on 127.0.0.1 with a free port; (process, base URL) once it listens."""
    return start_listening("captcha_label.py", "--no-browser", "--port", "0", "--device", "cpu", *args, timeout=120)


NAME = "document.getElementById('name').textContent"  # the file name of the image on show, and what is saved for it
KEYS = {"Enter": 13, "Tab": 9, "Escape": 27}


def press(browser: Browser, key: str, shift: bool = False) -> None:
    """One key press as a person makes it: keydown (with its character for a printable key), then keyup."""
    base = {"modifiers": 8 if shift else 0, "key": key}
    if key in KEYS:
        base |= {"code": key, "windowsVirtualKeyCode": KEYS[key]}
        browser.send("Input.dispatchKeyEvent", type="rawKeyDown", **base)
    else:
        code = f"Key{key.upper()}" if key.isalpha() else f"Digit{key}"
        base |= {"code": code, "windowsVirtualKeyCode": ord(key.upper())}
        browser.send("Input.dispatchKeyEvent", type="keyDown", text=key, **base)
    browser.send("Input.dispatchKeyEvent", type="keyUp", **base)


@pytest.fixture
def to_label(captchas, tmp_path):
    """A folder of 6 captchas for the page: five the shipped model reads right, and one of them turned
    upside down (0004.png), which it reads wrong."""
    from captchakit.api import load_model

    model = load_model(DEFAULT_MODEL, "cpu")
    right = [p for p, (text, _) in zip(captchas, model.predict_batch(captchas), strict=True) if text == label_from_name(p.name)]
    assert len(right) >= 6, "the shipped model reads the default style; fewer than 6 of 16 right means it broke"
    truth = opaque(right[:6], tmp_path / "imgs")
    with Image.open(tmp_path / "imgs" / "0004.png") as im:
        im.rotate(180).save(tmp_path / "imgs" / "0004.png")
    assert model.predict(tmp_path / "imgs" / "0004.png").text != truth["0004.png"]
    return SimpleNamespace(folder=tmp_path / "imgs", truth=truth)


def shown(browser: Browser, answers: int) -> str:
    """The file name of the image on show once the page has taken `answers` answers and shows the next image."""
    name = f"{NAME}.split(' ')[0]"
    return browser.wait_for(f"window.labelling.log.length === {answers} && {name}.endsWith('.png') && {name}", timeout=30)


@pytest.mark.slow
def test_the_page_labels_with_the_keyboard_alone_one_key_per_right_reading(chromium, to_label, tmp_path):
    proc, url = start_labeller(to_label.folder, "--model", DEFAULT_MODEL)
    (tmp_path / "profile").mkdir()
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(url)
        plan = {"0004.png": "correct", "0001.png": "skip", "0002.png": "unreadable"}  # the rest: Enter
        handled = []
        while len(handled) < 7:  # 6 images, the skipped one twice
            name = shown(browser, len(handled))
            reading = browser.eval("document.getElementById('label').value")
            action = plan.pop(name, "accept")
            handled.append((name, action))
            if action == "accept":
                assert reading == to_label.truth[name], f"{name}: the page shows {reading!r}, not the model's right reading"
                press(browser, "Enter")
            elif action == "correct":
                for char in to_label.truth[name]:
                    press(browser, char)
                press(browser, "Enter")
                press(browser, "Tab", shift=True)  # back to it: the saved label is on show; Tab moves on, nothing changed
                said = browser.wait_for(f"{NAME}.includes('saved') && {NAME}")
                assert said == f"{name} \u2014 saved as {to_label.truth[name]}"
                assert browser.eval("document.getElementById('label').value") == to_label.truth[name]
                press(browser, "Tab")
            else:
                press(browser, "Tab" if action == "skip" else "Escape")
        browser.wait_for("document.getElementById('done').classList.contains('shown')", timeout=30)
        log = browser.eval("window.labelling.log")
        session = browser.eval("document.getElementById('session').textContent")
    finally:
        browser.close()
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped: 5 labelled, 1 unreadable, 0 to go" in out, err
    assert [n for n, _ in handled].count("0001.png") == 2 and handled[-1][0] == "0001.png"  # the skipped one came back last
    labelled = {n: to_label.truth[n] for n in to_label.truth if n != "0002.png"}
    assert lines(to_label.folder / "labels.csv") == [HEADER, *(f"{n},{t}" for n, t in sorted(labelled.items()))]
    assert lines(to_label.folder / "unreadable.txt")[1:] == ["0002.png"]
    # Key presses, as the page counted them: one per image whose reading was right, the text and Enter for the wrong one.
    keys = {(e["name"], e["action"]): e["keys"] for e in log}
    accepted = [n for n, a in handled if a == "accept"]
    assert [keys[(n, "label")] for n in accepted] == [1] * len(accepted) and len(accepted) == 4
    assert keys[("0004.png", "label")] == len(to_label.truth["0004.png"]) + 1
    assert keys[("0001.png", "skip")] == 1 and keys[("0002.png", "unreadable")] == 1
    per_label = (len(accepted) + len(to_label.truth["0004.png"]) + 1) / 5
    assert session == f"5 labelled in this session, {per_label:.2f} key presses per label."


def test_the_page_and_the_command_ship_with_the_package():
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["captchakit"]
    assert any(fnmatch.fnmatch("web/label.html", pattern) for pattern in patterns)
    assert pyproject["project"]["scripts"]["captcha-label"] == "captcha_label:cli"
