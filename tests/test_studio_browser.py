"""gvc_studio.py in a real browser: headless Debian Chromium driven by selenium against a studio started on a free port
with recipe-made official-format checkpoints (WORLD vocoder: no NSF-BigVGAN file needed).

Marked ``browser`` (``-m "not browser"`` skips it); skipped when chromium, chromedriver or selenium is missing (.ci/run
installs them). A screenshot of the Convert view is kept in ``$GVC_TEST_ARTIFACTS`` (default ``tmp/artifacts``).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from svc_features import cut_song, random_singer

from golden import cached_official_checkpoint

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
CORPUS_SONG = REPO / "tests" / "fixtures" / "corpus" / "kal" / "scale.wav"
ARTIFACTS = Path(os.environ.get("GVC_TEST_ARTIFACTS") or REPO / "tmp" / "artifacts")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SONG_SECONDS = 1.0
SR = 32000
WAIT = 90  # seconds for one conversion on a busy 2-core machine

webdriver = pytest.importorskip("selenium.webdriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
                allow_module_level=True)

from selenium.common.exceptions import (  # noqa: E402
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The studio serving a singer whose F0 range is an octave above the song (Auto must say +12)."""
    from common.audio import load_audio
    from pitch.f0 import compute_f0
    from pitch.key import f0_stats, write_singer_stats

    tmp = tmp_path_factory.mktemp("studio")
    song = cut_song(CORPUS_SONG, tmp / "song.wav", 0.5, 0.5 + SONG_SECONDS)
    singers = tmp / "singer"
    singers.mkdir()
    random_singer(singers / "soprano.spk.npy")
    f0 = compute_f0(load_audio(song, 16000), 16000)
    write_singer_stats(singers / "soprano.spk.npy", f0_stats(f0 * 2))
    port = free_port()
    cmd = [sys.executable, str(REPO / "gvc_studio.py"), "--model", str(cached_official_checkpoint("gvc_v3")),
           "--hubert_model", str(cached_official_checkpoint("hubert_soft", prefix="module.")), "--vocoder", "world",
           "--singers", str(singers), "--port", str(port), "--workdir", str(tmp / "work"), "--max_upload_mb", "0.5"]
    log = open(tmp / "studio.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("the studio did not start:\n" + (tmp / "studio.log").read_text()[-3000:])
            time.sleep(0.5)
    yield {"url": url, "song": song, "tmp": tmp, "log": tmp / "studio.log"}
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture
def browser():
    """A factory of headless Chromium sessions (each is a browser session of its own), all closed at the end."""
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def make():
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,2000"):
            opts.add_argument(arg)
        d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        drivers.append(d)
        return d

    yield make
    for d in drivers:
        d.quit()


# Gradio (Svelte) re-renders nodes at any time: texts are read in the page by script, never through a kept element


def text_of(d, elem_id: str) -> str:
    return d.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : '';", elem_id)


def toasts(d) -> list[str]:
    """The texts of the error messages on the page."""
    return d.execute_script("return Array.from(document.querySelectorAll('.toast-body')).map(e => e.innerText)"
                            ".filter(t => t.trim());")


def close_toasts(d) -> None:
    d.execute_script("document.querySelectorAll('.toast-close').forEach(b => b.click());")
    WebDriverWait(d, 10).until(lambda _: not toasts(d))


def wait_toast(d, needle: str) -> str:
    return WebDriverWait(d, 30, poll_frequency=0.25).until(lambda _: next((t for t in toasts(d) if needle in t), None))


def wait_text(d, elem_id: str, needle: str, timeout: float = WAIT) -> str:
    def check(_):
        errors = toasts(d)
        if errors:
            raise AssertionError(f"error on the page while waiting for {needle!r} in #{elem_id}: {errors}")
        return needle in text_of(d, elem_id)

    WebDriverWait(d, timeout, poll_frequency=0.25).until(check)
    return text_of(d, elem_id)


def retry(action, tries: int = 5):
    """Run a browser action again when Gradio replaced the element under it (or has not drawn it yet)."""
    for i in range(tries):
        try:
            return action()
        except (StaleElementReferenceException, NoSuchElementException, ElementNotInteractableException):
            if i == tries - 1:
                raise
            time.sleep(0.3)


def upload(d, elem_id: str, path: Path) -> None:
    def send():
        field = d.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]")
        d.execute_script("arguments[0].style.display = 'block';", field)  # Gradio hides it behind its drop zone
        field.send_keys(str(path))

    retry(send)


def set_number(d, elem_id: str, value) -> None:
    def send():
        box = d.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.TAB)

    retry(send)
    WebDriverWait(d, 10).until(lambda _: input_value(d, elem_id) == float(value))


def input_value(d, elem_id: str) -> float | None:
    text = d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.value : '';",
                            f"#{elem_id} input")
    try:
        return float(text)
    except ValueError:
        return None


def click(d, elem_id: str) -> None:
    retry(lambda: d.find_element(By.ID, elem_id).click())


def open_page(d, url: str, song: Path) -> None:
    d.get(url)
    WebDriverWait(d, 30).until(lambda _: d.find_elements(By.CSS_SELECTOR, "#song input[type=file]"))
    upload(d, "song", song)
    wait_text(d, "song-info", "voiced")
    set_number(d, "steps", 1)  # one decoder step: the whole path, in seconds on a CPU


def convert(d, runs: int) -> str:
    """Click Convert and wait for this session's ``runs``-th result; returns the message."""
    click(d, "convert")
    return wait_text(d, "message", "Converted", WAIT) if runs == 1 else _wait_run(d, runs)


def _wait_run(d, runs: int) -> str:
    WebDriverWait(d, WAIT, poll_frequency=0.25).until(lambda _: f"convert{runs:03d}" in download_href(d))
    return text_of(d, "message")


def download_href(d) -> str:
    return d.execute_script("const a = document.querySelector('#download a[href]'); return a ? a.href : '';")


def fetch_wav(d, tmp: Path, name: str) -> tuple[np.ndarray, int, str]:
    href = download_href(d)
    assert href, "no download link"
    path = tmp / name
    with urllib.request.urlopen(href, timeout=30) as r:
        path.write_bytes(r.read())
    wav, sr = sf.read(path, dtype="float32")
    return wav, sr, href


def check_wav(wav: np.ndarray, sr: int) -> None:
    assert sr == SR
    assert abs(len(wav) - SONG_SECONDS * SR) <= 0.03 * SR  # the song's length (to a few 10 ms frames)
    assert np.isfinite(wav).all()
    assert float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) > 1e-3  # not silent


def median_f0(wav: np.ndarray, sr: int) -> float:
    from common.audio import load_audio
    from pitch.f0 import compute_f0

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"f0_{os.getpid()}.wav"
    sf.write(path, wav, sr)
    f0 = compute_f0(load_audio(path, 16000), 16000)
    path.unlink()
    return float(np.median(f0[f0 > 0]))


def test_convert_auto_edit_a_note_and_reconvert(studio, browser, tmp_path):
    d = browser()
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    d.get(studio["url"])
    WebDriverWait(d, 30).until(lambda _: d.find_elements(By.CSS_SELECTOR, "#song input[type=file]"))
    upload(d, "song", bad)  # a message on the page, not a traceback
    toast = wait_toast(d, "not readable")
    assert "bad.wav: not readable as audio" in toast and "Traceback" not in toast
    close_toasts(d)
    big = tmp_path / "big.wav"  # 640 kB, over the studio's --max_upload_mb 0.5
    sf.write(big, np.random.default_rng(1).uniform(-0.1, 0.1, 20 * 16000).astype(np.float32), 16000, "PCM_16")
    d.get(studio["url"])
    WebDriverWait(d, 30).until(lambda _: d.find_elements(By.CSS_SELECTOR, "#song input[type=file]"))
    upload(d, "song", big)
    assert "exceed the maximum allowed size" in wait_toast(d, "big.wav")
    close_toasts(d)
    open_page(d, studio["url"], studio["song"])
    click(d, "auto")
    reason = wait_text(d, "auto-reason", "shift +12")
    assert "singer 5-95 %" in reason
    WebDriverWait(d, 10).until(lambda _: input_value(d, "shift") == 12)
    convert(d, 1)
    wav, sr, href = fetch_wav(d, tmp_path, "first.wav")
    check_wav(wav, sr)
    assert "convert001_soprano.wav" in href
    for elem_id in ("mel-image", "f0-image"):  # the images of the result are on the page
        assert d.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    for outside in (REPO / "README.md", studio["tmp"] / "studio.log"):  # no file outside the studio's folders
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{studio['url']}gradio_api/file={outside}", timeout=10)
        assert err.value.code in (403, 404)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "studio_convert.png"))

    # the Pitch tab: change the first note's name to an octave above and re-convert with the edited F0
    retry(lambda: d.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Pitch')]").click())
    cell_css = "#notes [data-testid='cell-0-4']"
    WebDriverWait(d, 20).until(lambda _: d.find_elements(By.CSS_SELECTOR, cell_css))
    old_name = d.execute_script("return document.querySelector(arguments[0]).innerText;", cell_css).split()[0]
    new_name = old_name[:-1] + str(int(old_name[-1]) + 1)  # the octave above ("E3" of "E3 +3c" -> "E4")
    retry(lambda: ActionChains(d).double_click(d.find_element(By.CSS_SELECTOR, cell_css)).perform())
    retry(lambda: d.find_element(By.CSS_SELECTOR, "#notes textarea").send_keys(Keys.CONTROL, "a"))
    retry(lambda: d.find_element(By.CSS_SELECTOR, "#notes textarea").send_keys(new_name, Keys.ENTER))
    WebDriverWait(d, 10).until(  # (a selected cell also shows its menu button)
        lambda _: d.execute_script("return document.querySelector(arguments[0]).innerText;", cell_css).split()[:1]
        == [new_name])
    click(d, "apply-table")
    wait_text(d, "pitch-msg", "1 note(s) changed", 30)
    retry(lambda: d.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Convert')]").click())
    message = convert(d, 2)
    assert "with the edited pitch" in message
    edited, sr, href = fetch_wav(d, tmp_path, "edited.wav")
    check_wav(edited, sr)
    assert "convert002" in href
    assert not np.array_equal(edited, wav)  # the same seed: only the edited F0 makes it differ

    # a second singer from an uploaded file, mixed half and half
    alto = random_singer(tmp_path / "alto.spk.npy", seed=7)
    upload(d, "singer2-upload", alto)
    WebDriverWait(d, 20).until(  # uploaded: its name and download link show
        lambda _: d.find_elements(By.CSS_SELECTOR, "#singer2-upload td.filename[aria-label='alto.spk.npy']"))
    set_number(d, "mix", 0.5)
    message = convert(d, 3)
    assert "voice soprano 50 % + alto 50 %" in message
    mixed, sr, _ = fetch_wav(d, tmp_path, "mixed.wav")
    check_wav(mixed, sr)
    assert not np.array_equal(mixed, edited)  # the same seed and F0: only the voice differs


def test_two_sessions_converting_at_once_get_their_own_results(studio, browser, tmp_path):
    a, b = browser(), browser()
    for d in (a, b):
        open_page(d, studio["url"], studio["song"])
    set_number(b, "shift", 12)
    click(a, "convert")
    click(b, "convert")
    for d in (a, b):
        wait_text(d, "message", "Converted", 2 * WAIT)
    wav_a, sr_a, href_a = fetch_wav(a, tmp_path, "a.wav")
    wav_b, sr_b, href_b = fetch_wav(b, tmp_path, "b.wav")
    check_wav(wav_a, sr_a)
    check_wav(wav_b, sr_b)
    assert "shift +0" in text_of(a, "message") and "shift +12" in text_of(b, "message")
    assert href_a != href_b and not np.array_equal(wav_a, wav_b)
    # each concurrent result is what the same settings give alone (the seed makes conversions bit-exact):
    # a converts b's settings, then b converts a's, one after the other
    set_number(a, "shift", 12)
    convert(a, 2)
    set_number(b, "shift", 0)
    convert(b, 2)
    assert np.array_equal(fetch_wav(a, tmp_path, "a2.wav")[0], wav_b)
    assert np.array_equal(fetch_wav(b, tmp_path, "b2.wav")[0], wav_a)
