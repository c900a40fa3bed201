"""The deflate-bomb bound on every way in (issue 21, item 6): ``watch``, a backfill folder and DICOMweb backfill.

A 400 KB deflated file that inflates to 400 MB (``tests/dicom_io/bombs.deflate_bomb``) is dropped in a watch folder,
put in a backfill folder, and served by a DICOMweb server on loopback (QIDO-RS and WADO-RS, multipart). Each path
runs in a fresh interpreter whose peak RSS is read (``resource.getrusage``): it must take the file in (its job
recorded; the worker refuses it later) or set it aside, without ever inflating it whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest

from tests.dicom_io.bombs import deflate_bomb

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARGIN_MB = 100  # a bound path needs a few MB over its imports; a whole inflate needs 400 MB more

_RUN = """
import json, os, sys
from pathlib import Path
mode, arg = sys.argv[1], sys.argv[2]
from db import upgrade
from worker.core.settings import get_settings
from worker.backfill import open_source, run_backfill
from worker.ingest.watch import DropFolderWatcher
settings = get_settings()
upgrade(settings.database_url)
out = {}
if mode == "watch":
    counts = DropFolderWatcher(settings, Path(arg), settle_s=0).poll()
    out = {"queued": counts.queued + counts.deferred, "rejected": counts.rejected}
elif mode in ("folder", "dicomweb"):
    summary = run_backfill(settings, open_source(arg, settings), progress=False)
    out = {"queued": summary.queued + summary.deferred, "failed": summary.failed}
# VmHWM: this interpreter's own peak (ru_maxrss keeps the parent's across exec on Linux)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
out["peak_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


def _run(mode: str, arg: str, tmp_path: Path, redis_url: str) -> dict[str, float]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FETALHC_")}
    env.update({"FETALHC_DATABASE_URL": f"sqlite:///{tmp_path / f'{mode}.db'}", "FETALHC_BROKER_URL": redis_url,
                "FETALHC_SPOOL_DIR": str(tmp_path / f"spool-{mode}"), "PYTHONPATH": str(REPO)})
    done = subprocess.run([sys.executable, "-c", _RUN, mode, arg], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = deflate_bomb(tmp_path_factory.mktemp("bomb") / "bomb.dcm")
    assert path.stat().st_size < 1 << 20
    return path


@pytest.fixture(scope="module")
def baseline_mb(tmp_path_factory: pytest.TempPathFactory) -> float:
    """The same interpreter on an empty folder: imports, database, nothing to read."""
    import redis

    from tests.conftest import REDIS_URL

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("Redis is not available here")
    empty = tmp_path_factory.mktemp("empty")
    return _run("watch", str(empty), empty, REDIS_URL)["peak_mb"]


def test_watch_takes_a_deflate_bomb_without_inflating_it(bomb: Path, baseline_mb: float, tmp_path: Path,
                                                         redis_url: str) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "scan.dcm").write_bytes(bomb.read_bytes())
    result = _run("watch", str(folder), tmp_path, redis_url)
    assert result["queued"] == 1  # taken in (the worker refuses it as pixel_header_mismatch)
    assert result["peak_mb"] < baseline_mb + MARGIN_MB, result


def test_a_backfill_folder_takes_a_deflate_bomb_without_inflating_it(bomb: Path, baseline_mb: float,
                                                                     tmp_path: Path, redis_url: str) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "scan.dcm").write_bytes(bomb.read_bytes())
    result = _run("folder", str(folder), tmp_path, redis_url)
    assert result["queued"] == 1
    assert result["peak_mb"] < baseline_mb + MARGIN_MB, result


def _uids(path: Path) -> tuple[str, str]:
    """The file meta's SOP Instance and Class UIDs (pydicom would inflate the bomb whole to read its data set)."""
    with open(path, "rb") as f:
        f.seek(132)
        meta = pydicom.filereader._read_file_meta_info(f)
    return str(meta.MediaStorageSOPInstanceUID), str(meta.MediaStorageSOPClassUID)


@pytest.fixture()
def dicomweb(bomb: Path) -> Iterator[str]:
    """A DICOMweb server on loopback whose one US study holds the bomb (QIDO-RS JSON, WADO-RS multipart)."""
    uid, sop_class = _uids(bomb)
    study, series = "1.2.3.4.1", "1.2.3.4.2"
    body = bomb.read_bytes()

    def value(vr: str, text: str) -> dict[str, object]:
        return {"vr": vr, "Value": [text]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0].rstrip("/")
            if path.endswith("/studies"):
                answer = [{"0020000D": value("UI", study), "00080020": value("DA", "20250110")}]
            elif path.endswith("/series"):
                answer = [{"0020000E": value("UI", series), "00080060": value("CS", "US")}]
            elif path.endswith("/instances"):
                answer = [{"00080018": value("UI", uid), "00080016": value("UI", sop_class)}]
            else:
                boundary = "fetalhc-test-boundary"
                payload = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body
                           + f"\r\n--{boundary}--\r\n".encode())
                self.send_response(200)
                self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            data = json.dumps(answer).encode() if "offset=0" in self.path or "offset" not in self.path else b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()


def test_dicomweb_backfill_takes_a_deflate_bomb_without_inflating_it(dicomweb: str, baseline_mb: float,
                                                                     tmp_path: Path, redis_url: str) -> None:
    result = _run("dicomweb", dicomweb, tmp_path, redis_url)
    assert result["queued"] == 1, result
    assert result["peak_mb"] < baseline_mb + MARGIN_MB, result
    spooled = list((tmp_path / "spool-dicomweb").glob("*.dcm"))
    assert len(spooled) == 1 and spooled[0].stat().st_size < 1 << 20  # the file as served, never re-encoded
