"""The data layer: lookup order, checksums, and real downloads from a local HTTP server."""

import hashlib
import http.server
import io
import socket
import threading
import zipfile

import pytest
import torch

from labkit import data

PAYLOAD = ("To be, or not to be, that is the question.\n" * 4000).encode()  # ~170 KB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("folder/file.txt", PAYLOAD)
        z.writestr("folder/other.txt", b"other")
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        routes = {"/good.txt": PAYLOAD, "/corrupt.txt": PAYLOAD[:-10] + b"XXXXXXXXXX", "/good.zip": _zip_bytes()}
        if self.path in routes:
            body = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/cut.txt":  # promise the whole file, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _registry_restored():
    """The test data sets registered here leave the registry as they found it (the zoo kit packs every data set)."""
    saved = dict(data.REGISTRY)
    yield
    data.REGISTRY.clear()
    data.REGISTRY.update(saved)


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/file.txt"


def _register(name, *urls, member=None, sha=SHA):
    return data.register(data.Dataset(name=name, filename=f"{name}.txt", urls=tuple(urls), sha256=sha,
                                      size=len(PAYLOAD), license="test", citation="test", description="test",
                                      member=member), overwrite=True)


def _leftovers(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_good_file_is_verified_and_cached(server, isolated_cache):
    _register("t-good", f"{server}/good.txt")
    path = data.fetch("t-good", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert path.parent == isolated_cache
    assert _leftovers(isolated_cache) == ["t-good.txt"]  # no temporary files left
    # the second call uses the cache: it works with the server URL gone
    _register("t-good", _closed_port_url())
    assert data.fetch("t-good", progress=False) == path


def test_download_from_zip_member(server, isolated_cache):
    _register("t-zip", f"{server}/good.zip", member="folder/file.txt")
    assert data.fetch("t-zip", progress=False).read_bytes() == PAYLOAD


def test_corrupted_download_is_rejected_and_not_kept(server, isolated_cache):
    _register("t-corrupt", f"{server}/corrupt.txt")
    with pytest.raises(data.ChecksumError) as err:
        data.fetch("t-corrupt", progress=False)
    msg = str(err.value)
    assert SHA in msg and hashlib.sha256(PAYLOAD[:-10] + b"X" * 10).hexdigest() in msg
    assert _leftovers(isolated_cache) == []


def test_connection_cut_halfway_leaves_nothing(server, isolated_cache):
    _register("t-cut", f"{server}/cut.txt")
    with pytest.raises(RuntimeError, match="t-cut") as err:
        data.fetch("t-cut", progress=False)
    assert "LABKIT_DATA_DIR" in str(err.value)
    assert _leftovers(isolated_cache) == []
    # a later call must not trust anything from the failed one: with a good mirror it downloads afresh
    _register("t-cut", f"{server}/cut.txt", f"{server}/good.txt")
    assert data.fetch("t-cut", progress=False).read_bytes() == PAYLOAD


def test_offline_without_copy_says_how_to_preseed(isolated_cache):
    url = _closed_port_url()
    _register("t-offline", url)
    with pytest.raises(RuntimeError) as err:
        data.fetch("t-offline", progress=False, timeout=5)
    msg = str(err.value)
    assert "'t-offline'" in msg and url in msg and "LABKIT_DATA_DIR" in msg


def test_preseeded_dir_comes_first_and_is_verified(tmp_path, monkeypatch, isolated_cache):
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    (seeded / "t-seed.txt").write_bytes(PAYLOAD)
    monkeypatch.setenv("LABKIT_DATA_DIR", str(seeded))
    _register("t-seed", _closed_port_url())
    assert data.fetch("t-seed", progress=False) == seeded / "t-seed.txt"
    (seeded / "t-seed.txt").write_bytes(PAYLOAD + b"tampered")
    with pytest.raises(data.ChecksumError, match=SHA):
        data.fetch("t-seed", progress=False)


def test_corrupted_cache_file_is_an_error_naming_both_checksums(isolated_cache):
    _register("t-cache", _closed_port_url())
    isolated_cache.mkdir(parents=True, exist_ok=True)
    (isolated_cache / "t-cache.txt").write_bytes(b"truncated")
    with pytest.raises(data.ChecksumError) as err:
        data.fetch("t-cache", progress=False)
    assert SHA in str(err.value) and hashlib.sha256(b"truncated").hexdigest() in str(err.value)


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError) as err:
        data.fetch("shakespeare")
    assert "tinyshakespeare" in str(err.value) and "fra-eng" in str(err.value)


@pytest.mark.parametrize("name", ["tinyshakespeare", "fra-eng", "sms-spam", "instructions"])
def test_registered_datasets_resolve_from_preseeded_copy(name):
    if not data.os.environ.get("LABKIT_DATA_DIR"):
        pytest.skip("no LABKIT_DATA_DIR with the pre-seeded data sets")
    path = data.fetch(name)
    assert path.stat().st_size == data.REGISTRY[name].size


def test_readers():
    if not data.os.environ.get("LABKIT_DATA_DIR"):
        pytest.skip("no LABKIT_DATA_DIR with the pre-seeded data sets")
    pairs = data.load_fra_eng()
    assert len(pairs) == 142_787 and not any("\u202f" in fr for _, fr in pairs)
    sms = data.load_sms_spam()
    assert len(sms) == 5574 and sum(label == "spam" for label, _ in sms) == 747
    assert len(data.load_instructions()) == 1100
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8) and 0 <= images.min() and images.max() <= 1 and labels.max() == 9


def test_windows():
    seq = torch.arange(100)
    x, y = data.random_windows(seq, 8, 4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 8) and torch.equal(y, x + 1)
    batches = list(data.sequential_windows(seq, 10, 4))
    xs = torch.cat([b[0] for b in batches])
    assert xs.shape == (9, 10) and torch.equal(xs.flatten(), torch.arange(90))
    train, val = data.train_val_split(seq, 0.9)
    assert len(train) == 90 and val[0] == 90
    with pytest.raises(ValueError, match="context_length"):
        data.random_windows(seq[:5], 8, 2)
