"""labkit.zoo.sources: a learner's zoo fetches a missing model from a kit's address (checked against its manifest;
nothing half-written stays), trains it at once when the address does not answer, and otherwise looks at this
release's published kit."""

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from zoo_fixtures import TRAINED

from labkit import data, zoo
from labkit.zoo import kit, sources


# ---- the kit served: a learner's zoo fetches from its address -----------------------------------------------

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _StopsMidFile(_Quiet):
    def do_GET(self):  # noqa: N802 - http.server's name
        if not self.path.endswith(".pt"):
            return super().do_GET()
        body = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])  # then the laptop's Wi-Fi drops


@pytest.fixture
def served_kit(zoo_cache, tmp_path, monkeypatch):
    """A kit with kit-a and kit-b, served on 127.0.0.1; the learner's cache is empty."""
    kit.build(["kit-b"], progress=False)
    folder = kit.pack(tmp_path / "kit", ["kit-b"])
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "learner"))
    monkeypatch.delenv("LABKIT_DATA_DIR", raising=False)
    TRAINED.clear()
    servers = []

    def serve(handler=_Quiet):
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("LABKIT_KIT_URL", f"http://127.0.0.1:{server.server_port}/")
        return folder

    yield serve
    for server in servers:
        server.shutdown()


def _leftovers(learner: Path) -> list[str]:
    return [p.name for p in learner.rglob("*") if p.name.endswith((".partial", ".tmp"))]


def test_a_missing_model_is_fetched_from_the_kit_and_checked(served_kit, tmp_path, capsys):
    folder = served_kit()
    model = zoo.load("kit-b")
    assert model.zoo_source == "downloaded" and TRAINED == [] and float(model.weight[0, 0].detach()) == 0.25
    assert "fetched from http://127.0.0.1" in capsys.readouterr().out
    entry = zoo.manifest(tmp_path / "learner" / "zoo")[zoo.path("kit-b").name]
    assert entry["fetched_from"].startswith("http://127.0.0.1") and entry["trained_on"].startswith("cpu")
    assert zoo.load("kit-b").zoo_source == "cache"
    assert data.fetch("sms-spam", progress=False).read_bytes() == (folder / "SMSSpamCollection").read_bytes()


def test_a_wrong_checksum_from_the_kit_is_not_kept_and_the_model_is_trained(served_kit, tmp_path, capsys):
    folder = served_kit()
    listing = json.loads((folder / "zoo" / zoo.MANIFEST).read_text())
    listing["files"][zoo.path("kit-a").name]["sha256"] = "0" * 64
    (folder / "zoo" / zoo.MANIFEST).write_text(json.dumps(listing))
    model = zoo.load("kit-a")
    out = capsys.readouterr().out
    assert "wrong checksum" in out and "not cached yet: training it now" in out
    assert model.zoo_source == "trained" and TRAINED == [0.5] and not _leftovers(tmp_path / "learner")


def test_a_server_that_stops_mid_file_leaves_nothing_half_written(served_kit, tmp_path, capsys):
    served_kit(_StopsMidFile)
    model = zoo.load("kit-a")
    assert "connection closed after" in capsys.readouterr().out
    assert model.zoo_source == "trained" and not _leftovers(tmp_path / "learner")
    assert zoo.check(zoo.path("kit-a")) is None


def test_an_unreachable_kit_falls_back_to_training_at_once(zoo_cache, monkeypatch):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("LABKIT_KIT_URL", f"http://127.0.0.1:{port}/")
    t0 = time.perf_counter()
    assert zoo.load("kit-a").zoo_source == "trained"
    assert time.perf_counter() - t0 < sources.PROBE_SECONDS + 2


def test_the_published_kit_is_this_release_of_the_repository(monkeypatch):
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    expected = f"{project['urls']['Repository']}/releases/download/v{project['version']}/"
    assert sources.release_url() == expected
    monkeypatch.delenv("LABKIT_KIT_URL", raising=False)
    assert [s.base for s in sources.sources()] == [expected]
    monkeypatch.setenv("LABKIT_KIT_URL", "off")
    assert sources.sources() == []
