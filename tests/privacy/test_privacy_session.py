"""A real tiny-llama session with uneven edit counts: the wire view and metadata attack on its ledger, and the
audit page rendered in headless Chromium (screenshot not blank, every figure present and decodable)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from importlib.metadata import EntryPoint

import pytest

from secure_collab.cli import main
from tests.conftest import SHARED

EPS = [EntryPoint("attack", "attacks.cli.attack", "secure_collab.commands"),
       EntryPoint("audit", "attacks.cli.audit", "secure_collab.commands")]
pytestmark = pytest.mark.slow  # a networked session (~30 s) and a browser


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from attacks.session import run_session
    from secure_collab.data.formats import load_requests

    reqs = load_requests(SHARED / "counterfact.json", limit=4)
    work = tmp_path_factory.mktemp("session")
    ledger = run_session(work / "s", "tiny-llama", "shares", {"a": reqs[:1], "b": reqs[1:4]},
                         cache=work / "cache", say=lambda _m: None)
    return ledger, work


def test_metadata_from_the_ledger(session):
    from attacks.wire import ledger_traffic, metadata_attack

    ledger, _ = session
    traffic = ledger_traffic(ledger)
    assert set(traffic) == {"a", "b"}
    m = metadata_attack(traffic, {"a": 1, "b": 3})
    assert m["sizes_distinct"] == 1  # shares: every party's messages have the same size whatever it edits
    assert traffic["a"]["contribs"] == traffic["b"]["contribs"] > 0
    assert all(len(t["latency"]) >= 1 and min(t["latency"]) > 0 for t in traffic.values())


def test_wire_bytes_are_no_better_than_chance(tmp_path):
    out = tmp_path / "wire.json"
    rc = main(["attack", "--model", "tiny-llama", "--requests", str(SHARED / "counterfact.json"), "--limit", "12",
               "--view", "wire", "--m", "1", "--trials", "4", "--cache-dir", str(tmp_path / "cache"),
               "--json", str(out), "--quiet"], entry_points=EPS)
    assert rc == 0
    rows = json.loads(out.read_text())["results"]
    assert {r["mode"] for r in rows} == {"ckks", "shares"}
    for r in rows:
        assert r["subject_top1"] == 0.0 and r["binomial_p_vs_chance"] == 1.0  # 4 draws among > 2,000 candidates
        assert r["homogeneity"]["min_p"] > 1e-6  # real vs all-zero statistic: same byte distribution
    shares = next(r for r in rows if r["mode"] == "shares")
    assert shares["uniformity"]["min_p"] > 1e-6 and len(shares["bytes_per_statistic"]) == 1


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/setup installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return exe


def _browser(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def test_audit_page_renders_in_chromium(session, tmp_path):
    from PIL import Image

    ledger, _ = session
    results = tmp_path / "results"
    results.mkdir()
    rc = main(["attack", "--model", "tiny-llama", "--requests", str(SHARED / "counterfact.json"), "--limit", "12",
               "--view", "keys", "--attack", "subspace", "--m", "1,2", "--trials", "4",
               "--cache-dir", str(tmp_path / "cache"), "--json", str(results / "keys.json"), "--quiet"],
              entry_points=EPS)
    assert rc == 0
    page, verdicts = tmp_path / "audit.html", tmp_path / "verdicts.json"
    assert main(["audit", "--ledger", str(ledger), "--html", str(page), "--results", str(results),
                 "--json", str(verdicts)], entry_points=EPS) == 0
    text = page.read_text()
    assert not re.search(r"(src|href)=['\"](https?:|//)", text)  # self-contained: nothing fetched
    figures = re.findall(r"<img alt='figure: ([^']+)' src='data:image/png;base64,([^']+)'", text)
    assert [name for name, _ in figures] == ["timeline", "keys"]
    for _, data in figures:
        img = Image.open(io.BytesIO(base64.b64decode(data))).convert("L")
        assert img.size[0] > 300 and img.getextrema()[0] < 100  # a drawn plot, not an empty canvas
    v = json.loads(verdicts.read_text())["verdicts"]
    assert set(v) == {"coordinator", "solver", "party a", "party b"}
    assert v["coordinator"]["level"] in ("ok", "warn") and all(x["figure"] and x["setting"] for x in v.values())
    assert "readable ΔW" not in json.dumps(v["coordinator"], ensure_ascii=False)  # releases are encrypted (v2)

    exe = _chromium()
    shot = tmp_path / "shot.png"
    r = _browser(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    assert shot.is_file(), r.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and plots, not a blank page
    dom = _browser(exe, tmp_path, "--dump-dom", page.as_uri()).stdout
    assert dom.count("data:image/png;base64,") == len(figures) and "Verdict per role" in dom
