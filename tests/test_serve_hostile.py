"""Hostile requests to ``nst-jax serve``: each is refused with a 4xx and one line, before any work,
and leaves nothing behind. The requests are built here."""

from __future__ import annotations

import struct
import zlib

import pytest
from starlette.testclient import TestClient

from nst_jax import weights
from nst_jax.cli.serve import check_bind
from nst_jax.errors import ConfigError
from nst_jax.serve.app import Settings, create_app

from serve_support import ADAM, files, make_inputs

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("hostile-serve"))


@pytest.fixture
def client(inputs, tmp_path):
    app = create_app(Settings(tmp_path / "data", max_body=1 << 20, max_pending=3, max_styles=2),
                     weights.load_weights(inputs / "syn.h5"))
    with TestClient(app) as c:
        yield c


def _jobs_on_disk(tmp_path) -> list:
    folder = tmp_path / "data" / "jobs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (a decompression bomb's header) and whose
    data are a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_oversize_body_is_refused_before_it_is_read(client, tmp_path):
    big = [("content", ("c.png", b"\0" * (2 << 20), "image/png")), ("style", ("s.png", b"x", "image/png"))]
    r = client.post("/jobs", files=big)
    assert r.status_code == 413 and "over 1048576 bytes" in r.json()["error"]
    assert _jobs_on_disk(tmp_path) == []


def test_a_body_without_length_is_refused(client):
    def chunks():
        yield b"--x\r\n"

    r = client.post("/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 411


def test_a_decompression_bomb_and_a_non_image_are_refused_from_their_headers(client, inputs, tmp_path):
    bomb = [("content", ("bomb.png", png_header(100_000, 100_000), "image/png")), files(inputs)[1]]
    r = client.post("/jobs", files=bomb, data={"size": "48"})
    assert r.status_code == 400 and "pixels" in r.json()["error"], r.json()
    text = [("content", ("c.png", b"not an image at all", "image/png")), files(inputs)[1]]
    r = client.post("/jobs", files=text, data={"size": "48"})
    assert r.status_code == 400 and "error" in r.json()
    assert _jobs_on_disk(tmp_path) == []


@pytest.mark.parametrize("path", ["/jobs/..%2F..%2Fetc%2Fpasswd", "/jobs/../../etc/passwd", "/jobs/ABCDEF",
                                  "/jobs/" + "0" * 31 + "g", "/jobs/" + "0" * 32, "/jobs/%00",
                                  "/jobs/" + "a" * 32 + "/image", "/jobs/" + "a" * 5000 + "/events",
                                  "/static/..%2Fapp.py", "/static/index.html"])
def test_bad_ids_and_path_tricks_are_404(client, path):
    r = client.get(path)
    assert r.status_code == 404


def test_a_filename_with_a_path_never_reaches_the_filesystem(client, inputs, tmp_path):
    tricky = [("content", ("../../../../tmp/owned.png", (inputs / "content.png").read_bytes(), "image/png")),
              ("style", ("/etc/passwd", (inputs / "style.png").read_bytes(), "image/png"))]
    r = client.post("/jobs", files=tricky, data={**ADAM, "iterations": "1"})
    assert r.status_code == 201
    folder = tmp_path / "data" / "jobs" / r.json()["id"]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(("content", "style"))) == \
        ["content", "style-0"]


@pytest.mark.parametrize("data, message", [
    ({"weights": "/etc/passwd"}, "not an option a job takes"),
    ({"output": "/tmp/x.png"}, "not an option a job takes"),
    ({"init": "/etc/passwd"}, "no file"),
    ({"size": "--weights=/etc/passwd"}, "invalid int value"),
    ({"style-weight": "1e2,1e3"}, "one result a job"),
    ({"original-size": "maybe"}, "give true or false"),
    ({"content-mask": "x.png"}, "not an option a job takes"),
    ({"devices": "4"}, "not an option a job takes"),
    ({"preset": "keras-resnet50"}, "this server runs vgg19"),
])
def test_options_a_job_may_not_set_are_refused(client, inputs, tmp_path, data, message):
    r = client.post("/jobs", files=files(inputs), data={"size": "48", "iterations": "2", **data})
    assert r.status_code == 400 and message in r.json()["error"], r.json()
    assert _jobs_on_disk(tmp_path) == []


def test_too_many_files_fields_or_a_missing_file(client, inputs):
    styles = files(inputs)[1:] * 5
    assert client.post("/jobs", files=files(inputs)[:1] + styles).status_code == 400
    assert client.post("/jobs", files=files(inputs)[1:]).json()["error"].startswith("content")
    assert client.post("/jobs", files=files(inputs)[:1]).json()["error"].startswith("style")
    many = {f"f{i}": "1" for i in range(100)}
    assert client.post("/jobs", files=files(inputs), data=many).status_code == 400
    assert client.post("/jobs", data={"size": "48"}).status_code == 400  # not multipart at all


def test_a_flood_of_one_client_is_capped(client, inputs):
    codes = [client.post("/jobs", files=files(inputs), data={**ADAM, "iterations": "5000", "size": "48"}).status_code
             for _ in range(5)]
    assert codes[:3] == [201, 201, 201] and codes[3:] == [429, 429]
    for job in client.get("/jobs").json()["jobs"]:
        client.delete(f"/jobs/{job['id']}")


def test_a_post_from_another_sites_page_is_refused(client, inputs):
    r = client.post("/jobs", files=files(inputs), data={"size": "48"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post("/jobs", files=files(inputs), data={"size": "48"}, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in {k.lower() for k in client.get("/healthz").headers}


def test_with_a_token_every_request_needs_it(inputs, tmp_path):
    app = create_app(Settings(tmp_path / "data", token=TOKEN), weights.load_weights(inputs / "syn.h5"))
    with TestClient(app) as c:
        for path in ("/", "/healthz", "/jobs", "/options", "/static/app.js", "/jobs/" + "a" * 32):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"authorization": "Bearer wrong-token-000000000"}).status_code == 401
        assert c.post("/jobs", files=files(inputs)).status_code == 401
        assert c.get("/healthz", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get(f"/healthz?token={TOKEN}").status_code == 200
        # the page opened as /?token=... loads its own script and style with the token
        page = c.get(f"/?token={TOKEN}").text
        assert f"/static/app.js?token={TOKEN}" in page and f"/static/style.css?token={TOKEN}" in page
        assert c.get(f"/static/app.js?token={TOKEN}").status_code == 200


def test_binding_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(ConfigError, match="needs --token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="at least 16"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", TOKEN)


def test_security_headers_on_every_response(client):
    for path in ("/", "/healthz", "/jobs/nope"):
        h = client.get(path).headers
        assert h["x-content-type-options"] == "nosniff" and "default-src 'self'" in h["content-security-policy"]


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "needs --token"),
    (["--host", "0.0.0.0", "--token", "short"], "at least 16"),
    (["--max-batch", "0"], "--max-batch"),
    (["--max-upload-mb", "-1"], "--max-upload-mb"),
    (["--data-dir", "{weights}"], "is not a folder"),
    (["--data-dir", "{dir}"], "inside --data-dir"),
])
def test_serve_refuses_unsafe_or_bad_options_with_one_line(inputs, capsys, argv, message):
    from nst_jax import cli

    argv = [a.replace("{weights}", str(inputs / "syn.h5")).replace("{dir}", str(inputs)) for a in argv]
    code = cli.main(["serve", "--weights", str(inputs / "syn.h5"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1
