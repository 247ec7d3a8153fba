"""End to end: `saelab app` serves the demo workspace on a free localhost port and headless Chromium (Debian's
`chromium` + `chromium-driver`, driven by selenium) loads every page, opens a feature from the search table,
runs a prompt, follows a latent link, and names a latent then finds it by search. Screenshots go to
$SAELAB_SCREENSHOT_DIR or the test's temporary directory. The README's screenshots come from a real `saelab demo`
workspace instead: with $SAELAB_SCREENSHOT_WORKSPACE set to one, `test_screenshots_of_a_demo_workspace` visits
its pages (and checks they show no error); without it that test skips.

Needs: apt-get install chromium chromium-driver; pip install selenium. Skips (saying so) without them.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from saelab.db import ResultsStore
from saelab.feature_circuits.storage import save_feature_graph
from saelab.testing import DEMO_SAES, build_demo_workspace

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ATTN = DEMO_SAES[0].sae_id
GRAPH_ID = "attribution_graph-e2e"
TIMEOUT_S = 180  # the first page load imports torch and TransformerLens in the server
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,2200")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"`saelab app` exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"`saelab app` did not answer at {url} within {TIMEOUT_S} s")


def _wait_closed(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    from synthetic_graphs import synthetic_graph  # tests/: a small graph over two of the demo SAEs

    workspace = build_demo_workspace(tmp_path_factory.mktemp("e2e"))
    save_feature_graph(ResultsStore(workspace.db_path), synthetic_graph(), graph_id=GRAPH_ID)
    with _serve(workspace.root) as url:
        yield url


@contextmanager
def _serve(root: Path) -> Iterator[str]:
    """`saelab app` over the workspace at `root` on a free port (its log in root/app.log); its URL."""
    port = _free_port()
    log = open(root / "app.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "saelab", "app", "--workspace", str(root),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()  # `saelab app` stops its Streamlit child on SIGTERM
        stopped = _wait_closed(port, timeout_s=60)
        if proc.poll() is None or not stopped:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        assert stopped, "the Streamlit server outlived `saelab app` after SIGTERM"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="saelab-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SAELAB_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(driver, condition, what: str):
    try:
        return WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.3).until(condition)
    except Exception as exc:  # noqa: BLE001 - name what we waited for
        body = driver.find_element(By.TAG_NAME, "body").text[:2000]
        raise AssertionError(f"timed out waiting for {what}; page text:\n{body}") from exc


def _script_state(driver) -> str | None:
    apps = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
    return apps[0].get_attribute("data-test-script-state") if apps else None


def _settled(driver, *texts: str) -> None:
    """Wait until the page shows `texts` and the script run is over (Streamlit's own flag on stApp), then check
    that no exception or error box is shown."""
    for text in texts:
        _wait(driver, lambda d, t=text: t in d.find_element(By.TAG_NAME, "body").text, repr(text))
    for _ in range(2):  # a run can trigger a rerun (query parameters, selections): wait out both
        time.sleep(0.5)
        _wait(driver, lambda d: _script_state(d) == "notRunning", "the script run to end")
    time.sleep(1.5)  # plotly draws after the run
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"], [data-testid="stAlertContentError"]')
    assert not errors, [e.text for e in errors]


def _visit(driver, url: str, *texts: str) -> None:
    driver.get(url)
    _settled(driver, *texts)


def test_root_and_runs_urls(server, browser):
    _visit(browser, f"{server}/runs", "Training curves", "Compare SAEs")
    assert "Page not found" not in browser.find_element(By.TAG_NAME, "body").text
    _visit(browser, f"{server}/", "Training curves")
    _wait(browser, lambda d: d.current_url.rstrip("/").endswith("/runs"), "the root to land on /runs")


def test_runs_page(server, browser, shots):
    _visit(browser, f"{server}/runs", "Training curves", "Compare SAEs")
    charts = browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    assert len(charts) >= 2
    browser.save_screenshot(str(shots / "runs.png"))
    browser.execute_script("arguments[0].scrollIntoView({block: 'end'});", charts[-1])
    time.sleep(1.0)
    browser.save_screenshot(str(shots / "runs-frontier.png"))


def test_feature_opens_from_the_search_table(server, browser, shots):
    _visit(browser, f"{server}/features?sae={ATTN}", "latents match", "Pick a latent")
    grid = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]'), "the table")[0]
    browser.save_screenshot(str(shots / "features-search.png"))
    width, height = grid.size["width"], grid.size["height"]
    row = 2  # third row: the selection checkbox sits in the first 30 px, rows are 35 px under a 35 px header
    ActionChains(browser).move_to_element_with_offset(grid, 16 - width // 2, 35 + 35 * row + 17 - height // 2) \
        .click().perform()
    _wait(browser, lambda d: "latent=" in d.current_url, "the URL to carry the latent")
    latent = browser.current_url.split("latent=")[1].split("&")[0]
    _settled(browser, f"Latent {latent}", "Top activations", "max activation")
    browser.save_screenshot(str(shots / "features.png"))


def test_shared_feature_url_and_bad_latent(server, browser):
    _visit(browser, f"{server}/features?sae={ATTN}&latent=7", "Latent 7", "Top activations", "Download JSON",
           "quantile 4 of 4")
    browser.get(f"{server}/features?sae={ATTN}&latent=999999")
    _wait(browser, lambda d: "out of range" in d.find_element(By.TAG_NAME, "body").text, "the out-of-range message")


def test_prompt_explorer_and_latent_link(server, browser, shots):
    _visit(browser, f"{server}/prompts?sae={ATTN}", "Tokens shaded")
    box = browser.find_element(By.TAG_NAME, "textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys("When Mary and John went to the store, John gave a drink to")
    next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Run").click()
    _wait(browser, lambda d: "return x + y" not in d.find_element(By.TAG_NAME, "body").text, "the new prompt's run")
    _settled(browser, "Direct feature attribution")
    browser.save_screenshot(str(shots / "prompts.png"))
    links = [a for a in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stPageLink-NavLink"]')
             if "latent" in a.text]
    assert links, "no latent links on the prompt explorer"
    latent = links[0].get_attribute("href").split("latent=")[1]
    links[0].click()
    _wait(browser, lambda d: "/features" in d.current_url, "the feature page")
    _settled(browser, f"Latent {latent}")


def test_circuits_page(server, browser, shots):
    _visit(browser, f"{server}/circuits", "Circuit graph", "All methods")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 4
    browser.save_screenshot(str(shots / "circuits.png"))


def test_evaluations_page(server, browser, shots):
    _visit(browser, f"{server}/evaluations", "metric to compare", "Reconstruction and sparsity")
    browser.save_screenshot(str(shots / "evaluations.png"))


def test_overview_page_lists_the_latents_of_a_clicked_bin(server, browser, shots):
    _visit(browser, f"{server}/overview?sae={ATTN}", "SAE overview", "never fire", "latents in bin")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .bars path"), "the bars")
    browser.save_screenshot(str(shots / "overview.png"))
    first_bin = browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .xtick text")[0].text

    last_click = [0.0]

    def listed_after_a_click(driver) -> bool:
        """True once the clicked bin is listed; until then click its bar again (a click that lands while plotly
        or a rerun redraws the chart is lost, and a redraw makes the old bar element stale) — only when no run is
        in progress and 5 s after the last click, so a click that did land is never undone by a second one."""
        boxes = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSelectbox"] input')
        if any((box.get_attribute("value") or "").startswith(first_bin) for box in boxes):
            return True
        if _script_state(driver) != "notRunning" or time.monotonic() - last_click[0] < 5.0:
            return False
        try:
            bar = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .bars path")[0]
            ActionChains(driver).move_to_element(bar).click().perform()
            last_click[0] = time.monotonic()
        except Exception:  # noqa: BLE001 - a stale or covered bar: try again on the next poll
            pass
        return False

    _wait(browser, listed_after_a_click, f"the bin {first_bin!r} to be listed")
    _settled(browser, "latents in bin")
    browser.save_screenshot(str(shots / "overview-bin.png"))


def _type_into(driver, selector: str, text: str, enter: bool = False) -> None:
    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text, *([Keys.ENTER] if enter else []))


def test_name_a_latent_and_find_it_by_search(server, browser):
    _visit(browser, f"{server}/features?sae={ATTN}&latent=3", "Latent 3", "Name this latent")
    def form_open(driver) -> bool:
        """True once the label box can be typed into; until then open the expander (a click during a rerun is lost)."""
        boxes = driver.find_elements(By.CSS_SELECTOR, 'input[aria-label="label"]')
        if boxes and boxes[0].is_displayed() and boxes[0].is_enabled():
            return True
        try:
            summary = next(e for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stExpander"] summary')
                           if "Name this latent" in e.text)
            if summary.find_element(By.XPATH, "..").get_attribute("open") is None:  # closed: open it, never close it
                summary.click()
        except Exception:  # noqa: BLE001 - stale or not yet drawn: try again on the next poll
            pass
        return False

    _wait(browser, form_open, "the label form to open")
    time.sleep(0.5)  # the expander's opening animation
    _type_into(browser, 'input[aria-label="label"]', "e2e label: names")
    _type_into(browser, 'textarea[aria-label="note"]', "written by the browser test")
    next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Save label").click()
    _settled(browser, "label: e2e label: names — written by the browser test", "Edit label")
    _visit(browser, f"{server}/features?sae={ATTN}", "latents match")
    _type_into(browser, 'input[aria-label="label or note contains"]', "browser test", enter=True)
    _settled(browser, "1 latents match")  # only that latent's note has the text (the table is a canvas)


def _retry_click(driver, button_text: str, done, last_click: list[float]) -> bool:
    """True once `done(driver)`; until then click the button labelled `button_text` again, but only when no
    script run is in progress and 5 s after the last click (a click that lands during a rerun is lost; one that
    landed is never repeated)."""
    if done(driver):
        return True
    if _script_state(driver) != "notRunning" or time.monotonic() - last_click[0] < 5.0:
        return False
    try:
        next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == button_text).click()
        last_click[0] = time.monotonic()
    except Exception:  # noqa: BLE001 - stale or not yet drawn: try again on the next poll
        pass
    return False


def _hover_shows(driver, text: str) -> bool:
    """Hover each latent marker of the graph until plotly's hover label shows `text`."""
    points = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .trace .points path")
    for point in points[:60]:
        try:
            ActionChains(driver).move_to_element(point).perform()
            time.sleep(0.2)
            if any(text in label.text for label in driver.find_elements(By.CSS_SELECTOR, ".hoverlayer .hovertext")):
                return True
        except Exception:  # noqa: BLE001 - a redraw made the marker stale: the next poll finds the new ones
            return False
    return False


def test_feature_graph_page_hover_ablate_and_dashboard_link(server, browser, shots):
    _visit(browser, f"{server}/feature_graphs?graph={GRAPH_ID}", "Feature graphs", "Showing", "Ablate or steer")
    assert GRAPH_ID in browser.current_url
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer"), "the graph")
    _wait(browser, lambda d: _hover_shows(d, "top activating tokens"), "a latent's hover text")
    browser.save_screenshot(str(shots / "feature-graphs.png"))
    last_click = [0.0]
    _wait(browser, lambda d: _retry_click(d, "Run the edit", lambda d2: "after the edit" in d2.find_element(
        By.TAG_NAME, "body").text, last_click), "the edit's top logits")
    _settled(browser, "before", "after the edit", "Latent activation × 0")
    browser.save_screenshot(str(shots / "feature-graphs-edit.png"))
    link = _wait(browser, lambda d: [a for a in d.find_elements(By.CSS_SELECTOR, '[data-testid="stPageLink-NavLink"]')
                                     if "dashboard of latent" in a.text], "the dashboard link")[0]
    latent = link.get_attribute("href").split("latent=")[1].split("&")[0]
    link.click()
    _wait(browser, lambda d: "/features" in d.current_url, "the feature page")
    _settled(browser, f"Latent {latent}", "Top activations")


SCREENSHOT_WORKSPACE = os.environ.get("SAELAB_SCREENSHOT_WORKSPACE")


def _readable_latent(store, sae_id: str) -> int:
    """Among the 50 strongest latents, the one whose automatic label covers the largest share of its contexts."""
    from saelab.app_support.labels import auto_label
    from saelab.app_support.render import distinct_contexts
    from saelab.db import queries as q

    def share(latent: int) -> float:
        top = [e for e in q.feature_examples(store, sae_id, latent) if e.kind == "top"]
        label = auto_label(distinct_contexts(top))
        return 0.0 if label is None else label.support / label.n_contexts

    latents = q.search_features(store, q.FeatureQuery(sae_id, limit=50)).rows["latent"].tolist()
    return max(latents, key=share)


@pytest.mark.skip_allowed_in_ci
@pytest.mark.skipif(not SCREENSHOT_WORKSPACE, reason="set SAELAB_SCREENSHOT_WORKSPACE to a `saelab demo` "
                                                     "workspace to take the README's screenshots from it")
def test_screenshots_of_a_demo_workspace(browser, shots):
    from saelab.db import ResultsStore
    from saelab.db import queries as q
    from saelab.workspace import Workspace

    workspace = Workspace(Path(SCREENSHOT_WORKSPACE).resolve())
    store = ResultsStore(workspace.db_path)
    sae = next(row for row in q.sae_rows(store)
               if row.dashboards and row.site.endswith("resid_post") and row.architecture == "topk")
    latent = _readable_latent(store, sae.sae_id)
    with _serve(workspace.root) as url:
        _visit(browser, f"{url}/runs", "Training curves", "Compare SAEs")
        browser.save_screenshot(str(shots / "runs.png"))
        chart = browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[-1]
        browser.execute_script("arguments[0].scrollIntoView({block: 'end'});", chart)
        time.sleep(1.0)
        browser.save_screenshot(str(shots / "runs-frontier.png"))
        for name, path, texts in [
            ("features-search", f"/features?sae={sae.sae_id}", ("latents match",)),
            ("features", f"/features?sae={sae.sae_id}&latent={latent}", (f"Latent {latent}", "Top activations")),
            ("overview", f"/overview?sae={sae.sae_id}", ("SAE overview",)),
            ("prompts", f"/prompts?sae={sae.sae_id}", ("Tokens shaded",)),
            ("circuits", "/circuits", ("Circuits",)),
            ("evaluations", "/evaluations", ("Evaluations",)),
            *_graph_pages(store),
        ]:
            _visit(browser, url + path, *texts)
            browser.save_screenshot(str(shots / f"{name}.png"))


def _graph_pages(store) -> list[tuple[str, str, tuple[str, ...]]]:
    """The newest stored graph of each kind (`saelab circuits --features`, `saelab graph`), if any."""
    from saelab.db import queries as q

    graphs = q.list_feature_graphs(store)
    pages = []
    for kind, name in (("feature_circuit", "feature-graphs"), ("attribution_graph", "feature-graphs-attribution")):
        newest = graphs[graphs["kind"] == kind]
        if not newest.empty:
            pages.append((name, f"/feature_graphs?graph={newest.iloc[0]['graph_id']}", ("Showing",)))
    return pages
