"""Regenerate the README's TensorBoard screenshots: python scripts/screenshots.py --data-dir data

Runs a small sweep (LeNet-5 on MNIST, max/avg/min pooling x 2 seeds, a few short epochs on the
CPU), serves it with a real TensorBoard server, and photographs three tabs in headless Chromium
through Selenium: the scalars, the images (feature maps after the first pooling) and HPARAMS.
Writes docs/screenshots/{scalars,images,hparams}.png (palette PNGs, small enough to commit).

Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver) and
`pip install selenium`; not part of the test suite. --sweep-dir keeps the sweep there; a dir
that already holds one is photographed as it is.
"""

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [
    "-m",
    "pooling=max,avg,min",
    "seed=0,1",
    "trainer=cpu",
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=60",
    "callbacks.views.every_n_epochs=1",
]
# (tab, what the page must show before the photo, file)
TABS = [
    ("#scalars&tagFilter=%5E(train%7Cval)%2Facc%24", "val/acc", "scalars.png"),
    ("#images&tagFilter=feature_maps%2F02_pool", "feature_maps/02_pool", "images.png"),
    ("#hparams", "choices/pooling", "hparams.png"),
]


def run_sweep(data_dir: Path, sweep_dir: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *SWEEP,
        f"data.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(logdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "data/runs", timeout=2)
            return server, url
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("TensorBoard did not start within a minute")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,950", "--hide-scrollbars"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


# The page's text, shadow DOMs included (TensorBoard's dashboards live in them).
PAGE_TEXT = """
let text = "";
const walk = (node) => {
  if (node.shadowRoot) walk(node.shadowRoot);
  for (const child of node.childNodes) {
    if (child.nodeType === Node.TEXT_NODE) text += child.textContent + " ";
    else walk(child);
  }
};
walk(document.body);
return text;
"""


def photograph(driver, url: str, expected: str, path: Path) -> None:
    from PIL import Image

    driver.get(url)
    deadline = time.monotonic() + 60
    while expected not in driver.execute_script(PAGE_TEXT):
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} never showed {expected!r}")
        time.sleep(0.5)
    time.sleep(4)  # charts and images finish drawing
    driver.save_screenshot(str(path))
    Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="where MNIST is (data.data_dir)")
    parser.add_argument(
        "--sweep-dir", help="where the sweep goes (default: a temporary dir); an existing sweep is reused"
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        sweep_dir = Path(args.sweep_dir).resolve() if args.sweep_dir else Path(scratch) / "sweep"
        if not (sweep_dir / "sweep_summary.json").exists():
            run_sweep(Path(args.data_dir).resolve(), sweep_dir)
        server, url = serve(sweep_dir)
        driver = browser()
        try:
            for tab, expected, name in TABS:
                photograph(driver, url + tab, expected, out / name)
        finally:
            driver.quit()
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
